// Shared by the tokenizer benchmark's peer scripts (peer_*.mjs): finding the installed package,
// the timing method and the JSON line each peer prints.
//
// Timing method, the same for every peer and for llmtk's tokenizer_bench: the file is read and
// decoded to a JS string once, outside the timing; one untimed warm-up encode of the whole text;
// then 3 timed encodes; the median counts. bytes = size of the file (UTF-8 bytes),
// mb_per_s = bytes / 1e6 / seconds. cpu_per_wall = process CPU time (user + system, all threads)
// over wall time during the timed runs: about 1 for one busy thread, about N for N.
//
// Packages are looked up in LLMTK_NODE_MODULES=DIR, then NODE_PATH (DIR or DIR/node_modules may
// be given either way), then the usual node resolution.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

export const require = createRequire(import.meta.url);

export function resolvePackage(spec, install) {
  const dirs = [process.env.LLMTK_NODE_MODULES, ...(process.env.NODE_PATH || '').split(path.delimiter)]
    .filter(Boolean);
  for (const dir of dirs) {
    try { return require.resolve(spec, { paths: [path.resolve(dir)] }); } catch { /* next */ }
  }
  try { return require.resolve(spec); } catch {
    console.error(`cannot find '${spec}'. Install with: npm install --prefix DIR ${install}\n` +
                  `and run with LLMTK_NODE_MODULES=DIR (or NODE_PATH=DIR/node_modules).`);
    process.exit(2);
  }
}

// The installed version of a package (found from its entry point: some packages do not export
// their package.json).
export function packageVersion(name, install) {
  let dir = path.dirname(resolvePackage(name, install));
  for (;;) {
    const f = path.join(dir, 'package.json');
    if (fs.existsSync(f)) {
      const pkg = JSON.parse(fs.readFileSync(f, 'utf8'));
      if (pkg.name === name && pkg.version) return pkg.version;
    }
    const up = path.dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}

// Command line: FILE [--ids OUT] plus the flags a peer names in `flags` (name -> has a value).
export function parseArgs(usage, flags = {}) {
  const argv = process.argv.slice(2);
  const out = { file: null, ids: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--ids') out.ids = argv[++i];
    else if (a.startsWith('--') && a.slice(2) in flags) {
      const k = a.slice(2);
      out[k] = flags[k] ? argv[++i] : true;
    } else if (!out.file && !a.startsWith('--')) out.file = a;
    else { console.error(`unknown argument '${a}'\n${usage}`); process.exit(2); }
  }
  if (!out.file) { console.error(usage); process.exit(2); }
  return out;
}

export function readText(file) {
  const buf = fs.readFileSync(file);
  return { bytes: buf.length, text: buf.toString('utf8') };
}

// encode() returns the ids of the whole text (an array-like of numbers, or an array of such
// arrays for batch encoders), possibly as a promise. before() runs before each timed run.
export async function timeEncode(encode, { before } = {}) {
  const count = (ids) => (ids.length && typeof ids[0] === 'object'
    ? ids.reduce((n, x) => n + x.length, 0) : ids.length);
  let ids = await encode(); // warm-up
  const tokens = count(ids);
  const times = [];
  let cpu = 0;
  for (let run = 0; run < 3; run++) {
    if (before) before();
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    ids = await encode();
    const t1 = process.hrtime.bigint();
    const c1 = process.cpuUsage(c0);
    times.push(Number(t1 - t0) / 1e9);
    cpu += (c1.user + c1.system) / 1e6;
    if (count(ids) !== tokens) throw new Error('token count changed between runs');
  }
  const wall = times.reduce((a, b) => a + b, 0);
  times.sort((a, b) => a - b);
  return { ids, tokens, seconds: times[1], cpuPerWall: cpu / wall };
}

// Writes the ids (flattened) as little-endian uint32, for run.sh's comparison with llmtk.
export function writeIds(file, ids) {
  const parts = ids.length && typeof ids[0] === 'object' ? ids : [ids];
  const n = parts.reduce((s, x) => s + x.length, 0);
  const out = new Uint32Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  fs.writeFileSync(file, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
}

export function report({ peer, threads, bytes, result, extra = {} }) {
  console.log(JSON.stringify({
    peer,
    threads,
    bytes,
    tokens: result.tokens,
    seconds: Number(result.seconds.toPrecision(6)),
    mb_per_s: Number((bytes / 1e6 / result.seconds).toPrecision(6)),
    cpu_per_wall: Number(result.cpuPerWall.toFixed(2)),
    ...extra,
  }));
}

// Splits text into chunks of about chunkChars characters (UTF-16 units), each cut just before a
// '\n' that follows a non-space character. GPT-2's pre-tokenizer pattern always has a boundary there (no
// pre-token holds a non-space character followed by a space), so encoding the chunks one by one
// gives the same ids as encoding the whole text; run.sh checks that against llmtk's ids.
export function splitChunks(text, chunkChars) {
  const chunks = [];
  let start = 0;
  while (start < text.length) {
    let cut = start + chunkChars;
    while (cut < text.length && !(text[cut] === '\n' && !/\s/.test(text[cut - 1]))) cut++;
    chunks.push(text.slice(start, Math.min(cut, text.length)));
    start = cut;
  }
  return chunks;
}
