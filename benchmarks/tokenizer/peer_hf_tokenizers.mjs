// Peer for the tokenizer benchmark: encodes a text file with Hugging Face tokenizers (the Rust
// library, through its official node binding, npm package `tokenizers`) and prints one JSON line
// like peer_gpt_tokenizer.mjs. Timing method and package lookup: peer_common.mjs.
//
// Install once:  npm install --prefix DIR tokenizers@0.23.2
// Run:           LLMTK_NODE_MODULES=DIR node benchmarks/tokenizer/peer_hf_tokenizers.mjs FILE
//                    [--gpt2 DIR] [--batch [--chunk-chars N]] [--ids OUT]
//
// The tokenizer is GPT-2's tokenizer.json as Hugging Face publishes it for `gpt2`, built here from
// GPT-2's encoder.json + vocab.bpe (--gpt2 DIR, default tests/data/gpt2; the same files as the
// hub's vocab.json + merges.txt): a BPE model with the ByteLevel pre-tokenizer (GPT-2's regex, no
// prefix space), post-processor and decoder. The one difference: "<|endoftext|>" is not
// registered as an added token, so in the text it is plain text, as for llmtk and the other peers.
//
// Modes:
//   (default)  encode(text): the whole text in one call. One thread: the library pre-tokenizes and
//              merges a single input sequentially.
//   --batch    encodeBatch(chunks): the text cut into chunks of about N characters (default 8192;
//              on this text 4K-16K chunks were fastest, 64K ones 30% slower, one verse each 20%)
//              at pre-token boundaries (peer_common.mjs splitChunks; the ids are unchanged), encoded
//              on the library's Rayon thread pool. Threads: RAYON_NUM_THREADS (default: all CPUs);
//              TOKENIZERS_PARALLELISM=false makes it sequential, on one thread.
// The timing includes the encode call and reading the ids into JS (Encoding.getIds()), as a node
// user needs them; building the chunks is outside it.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageVersion, parseArgs, readText, report, require, resolvePackage, splitChunks, timeEncode, writeIds }
  from './peer_common.mjs';

const usage = 'usage: node benchmarks/tokenizer/peer_hf_tokenizers.mjs FILE [--gpt2 DIR] [--batch [--chunk-chars N]] [--ids OUT]';
const args = parseArgs(usage, { gpt2: true, batch: false, 'chunk-chars': true });
const install = 'tokenizers@0.23.2';
const { Tokenizer } = require(resolvePackage('tokenizers', install));
const version = packageVersion('tokenizers', install);

const gpt2 = args.gpt2 || 'tests/data/gpt2';
const vocab = JSON.parse(fs.readFileSync(path.join(gpt2, 'encoder.json'), 'utf8'));
const merges = fs.readFileSync(path.join(gpt2, 'vocab.bpe'), 'utf8').split('\n')
  .filter((l) => l && !l.startsWith('#version'));
const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
const tokenizer = Tokenizer.fromString(JSON.stringify({
  version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
  pre_tokenizer: byteLevel,
  post_processor: { ...byteLevel, trim_offsets: false },
  decoder: byteLevel,
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
           fuse_unk: false, byte_fallback: false, vocab, merges },
}));
if (tokenizer.getVocabSize() !== 50257) throw new Error(`vocabulary of ${tokenizer.getVocabSize()} tokens`);

const { bytes, text } = readText(args.file);
let encode, threads, mode;
if (args.batch) {
  const chunkChars = Number(args['chunk-chars'] || 8192);
  const chunks = splitChunks(text, chunkChars);
  const off = /^(false|0|off|no)$/i.test(process.env.TOKENIZERS_PARALLELISM || '');
  threads = off ? 1 : Number(process.env.RAYON_NUM_THREADS) || os.availableParallelism();
  mode = `encodeBatch, ${chunks.length} chunks of ~${chunkChars} chars`;
  encode = async () => (await tokenizer.encodeBatch(chunks)).map((e) => e.getIds());
} else {
  threads = 1;
  mode = 'encode, whole text';
  encode = async () => (await tokenizer.encode(text)).getIds();
}
const result = await timeEncode(encode);
if (args.ids) writeIds(args.ids, result.ids);
report({ peer: `HF tokenizers ${version} (${mode}; node ${process.version})`, threads, bytes, result });
