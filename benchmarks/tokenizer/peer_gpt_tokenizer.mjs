// Peer for the tokenizer benchmark: encodes a text file with gpt-tokenizer's GPT-2 (r50k_base)
// byte-level BPE encoder and prints one JSON line:
//   {"peer": "gpt-tokenizer <version> (node <version>)", "bytes": N, "tokens": M,
//    "seconds": s, "mb_per_s": x}
// bytes = size of the file (UTF-8 bytes), seconds = median of 3 timed encodes of the whole file
// after one untimed warm-up encode, mb_per_s = bytes / 1e6 / seconds.
//
// Install the peer once, in any directory outside the repository:
//   npm install --prefix DIR gpt-tokenizer          (e.g. DIR=/tmp/gpt2ref)
// Run (from anywhere):
//   LLMTK_NODE_MODULES=DIR node benchmarks/tokenizer/peer_gpt_tokenizer.mjs FILE [--cold]
// NODE_PATH=DIR/node_modules works as well (DIR or DIR/node_modules may be given either way).
//
// Notes for a fair comparison:
//   * "<|endoftext|>" in the file is encoded as plain text (no special tokens), as the golden
//     data in tests/data/gpt2_encodings.json does: encode(text, { disallowedSpecial: new Set() }).
//   * gpt-tokenizer keeps a merge cache (pre-token string -> ids, up to 100,000 entries); the
//     warm-up fills it, so by default the timed runs mostly hit that cache. With --cold the cache
//     is cleared before every timed run (the peer string then says so).
//   * The file is read and decoded to a JS string once, outside the timing.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url);

function resolvePackage(spec) {
  const dirs = [process.env.LLMTK_NODE_MODULES, ...(process.env.NODE_PATH || '').split(path.delimiter)]
    .filter(Boolean);
  for (const dir of dirs) {
    try { return require.resolve(spec, { paths: [path.resolve(dir)] }); } catch { /* next */ }
  }
  try { return require.resolve(spec); } catch {
    console.error(`cannot find '${spec}'. Install with: npm install --prefix DIR gpt-tokenizer\n` +
                  `and run with LLMTK_NODE_MODULES=DIR (or NODE_PATH=DIR/node_modules).`);
    process.exit(2);
  }
}

const file = process.argv[2];
if (!file) {
  console.error('usage: node benchmarks/tokenizer/peer_gpt_tokenizer.mjs FILE [--cold]');
  process.exit(2);
}
const cold = process.argv.slice(3).includes('--cold');

const gt = require(resolvePackage('gpt-tokenizer/encoding/r50k_base'));
const version = require(resolvePackage('gpt-tokenizer/package.json')).version;

const buf = fs.readFileSync(file);
const text = buf.toString('utf8');
const opts = { disallowedSpecial: new Set() };

let tokens = gt.encode(text, opts).length; // warm-up
const times = [];
for (let run = 0; run < 3; run++) {
  if (cold) gt.clearMergeCache();
  const t0 = process.hrtime.bigint();
  const ids = gt.encode(text, opts);
  const t1 = process.hrtime.bigint();
  times.push(Number(t1 - t0) / 1e9);
  if (ids.length !== tokens) throw new Error('token count changed between runs');
  tokens = ids.length;
}
times.sort((a, b) => a - b);
const seconds = times[1];

console.log(JSON.stringify({
  peer: `gpt-tokenizer ${version} (node ${process.version})${cold ? ' [merge cache cleared per run]' : ''}`,
  bytes: buf.length,
  tokens,
  seconds: Number(seconds.toPrecision(6)),
  mb_per_s: Number((buf.length / 1e6 / seconds).toPrecision(6)),
}));
