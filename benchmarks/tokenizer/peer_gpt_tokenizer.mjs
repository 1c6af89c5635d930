// Peer for the tokenizer benchmark: encodes a text file with gpt-tokenizer's GPT-2 (r50k_base)
// byte-level BPE encoder (pure JavaScript, one thread) and prints one JSON line:
//   {"peer": "gpt-tokenizer <version> (node <version>)", "threads": 1, "bytes": N, "tokens": M,
//    "seconds": s, "mb_per_s": x, "cpu_per_wall": c}
// Timing method and package lookup: peer_common.mjs.
//
// Install the peer once, in any directory outside the repository:
//   npm install --prefix DIR gpt-tokenizer@4.0.0
// Run (from anywhere):
//   LLMTK_NODE_MODULES=DIR node benchmarks/tokenizer/peer_gpt_tokenizer.mjs FILE [--cold] [--ids OUT]
//
// Notes for a fair comparison:
//   * "<|endoftext|>" in the file is encoded as plain text (no special tokens), as the golden
//     data in tests/data/gpt2_encodings.json does: encode(text, { disallowedSpecial: new Set() }).
//   * gpt-tokenizer keeps a merge cache (pre-token string -> ids, up to 100,000 entries); the
//     warm-up fills it, so by default the timed runs mostly hit that cache. With --cold the cache
//     is cleared before every timed run (the peer string then says so).
//   * No threads: the library has no parallel mode.
//   * --ids OUT writes the ids of the last run as little-endian uint32.

import { packageVersion, parseArgs, readText, report, require, resolvePackage, timeEncode, writeIds } from './peer_common.mjs';

const args = parseArgs('usage: node benchmarks/tokenizer/peer_gpt_tokenizer.mjs FILE [--cold] [--ids OUT]',
                       { cold: false });
const install = 'gpt-tokenizer@4.0.0';
const gt = require(resolvePackage('gpt-tokenizer/encoding/r50k_base', install));
const version = packageVersion('gpt-tokenizer', install);

const { bytes, text } = readText(args.file);
const opts = { disallowedSpecial: new Set() };
const result = await timeEncode(() => gt.encode(text, opts),
                                { before: args.cold ? () => gt.clearMergeCache() : undefined });
if (args.ids) writeIds(args.ids, result.ids);
report({
  peer: `gpt-tokenizer ${version} (node ${process.version})${args.cold ? ' [merge cache cleared per run]' : ''}`,
  threads: 1, bytes, result,
});
