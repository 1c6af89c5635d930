// Peer for the tokenizer benchmark: encodes a text file with tiktoken's npm package (OpenAI's
// Rust BPE core compiled to WebAssembly) using the r50k_base encoding, which is GPT-2's
// (same 50,257 ranks and pre-tokenizer pattern), and prints one JSON line like
// peer_gpt_tokenizer.mjs. Timing method and package lookup: peer_common.mjs.
//
// Install once:  npm install --prefix DIR tiktoken@1.0.22
// Run:           LLMTK_NODE_MODULES=DIR node benchmarks/tokenizer/peer_tiktoken.mjs FILE [--ids OUT]
//
// Notes:
//   * encode_ordinary(): "<|endoftext|>" in the file is plain text, as for the other peers.
//   * One thread: the npm package has no batch or parallel encode (the Python package's
//     encode_batch uses a thread pool; WebAssembly here runs on the calling thread).
//   * The timing includes copying the string into WebAssembly memory as UTF-8 and the ids back
//     (a Uint32Array), as a node user pays them.

import { packageVersion, parseArgs, readText, report, require, resolvePackage, timeEncode, writeIds } from './peer_common.mjs';

const args = parseArgs('usage: node benchmarks/tokenizer/peer_tiktoken.mjs FILE [--ids OUT]');
const install = 'tiktoken@1.0.22';
const { get_encoding } = require(resolvePackage('tiktoken', install));
const version = packageVersion('tiktoken', install);

const enc = get_encoding('r50k_base');
const { bytes, text } = readText(args.file);
const result = await timeEncode(() => enc.encode_ordinary(text));
if (args.ids) writeIds(args.ids, result.ids);
enc.free();
report({ peer: `tiktoken ${version} r50k_base, wasm (node ${process.version})`, threads: 1, bytes, result });
