// Checks that a tokenizer.json written by llmtk loads in an independent Hugging Face tokenizer
// implementation (Rust via its Node binding, or one of the JavaScript ones) and encodes/decodes
// like llmtk does.
//
// For every test string: ids from the HF implementation (add_special_tokens: false) must equal
// the ids of `llmtk tokenizer encode --input FILE --json [--special]`, and HF's decode of its ids
// (skip_special_tokens: false, clean_up_tokenization_spaces: false) must give the string back.
//
// Implementations (--impl):
//   rust          tokenizers (npm): the Node binding of Hugging Face's Rust `tokenizers` crate, the
//                 reference implementation (Oniguruma regexes), prebuilt .node binaries inside the
//                 npm package. Tokenizer.fromFile(path); no tokenizer_config.json involved.
//   tokenizers    @huggingface/tokenizers (Tokenizers.js, pure JS; the default). Takes the parsed
//                 tokenizer.json and a tokenizer_config object directly: {} is passed.
//   transformers  @huggingface/transformers (v3/v4) AutoTokenizer.from_pretrained, offline from a
//                 temp copy of the file. It fails without a tokenizer_config.json ("Cannot read
//                 properties of undefined (reading 'tokenizer_class')"), so a minimal "{}" one is
//                 written into the temp copy when none sits next to the tokenizer.json.
//   xenova        @xenova/transformers v2, the older, separately written code base; its
//                 src/tokenizers.js is imported directly (the package root needs the native
//                 sharp/onnxruntime binaries, which --ignore-scripts installs lack). Same temp copy.
//
// Setup (once, outside the repository; network to the npm registry only at install time):
//   npm install --prefix /tmp/hfjs @huggingface/tokenizers
//   npm install --prefix /tmp/hfrs tokenizers
//   npm install --prefix /tmp/hfjs-tf --ignore-scripts @huggingface/transformers   # optional
//   npm install --prefix /tmp/hfjs-xe --ignore-scripts @xenova/transformers        # optional
// (--ignore-scripts: onnxruntime-node's install script downloads from api.nuget.org; the
// tokenizers do not need it.) Point LLMTK_NODE_MODULES at the prefix holding the --impl's package.
// Run from the repository root:
//   LLMTK_NODE_MODULES=/tmp/hfjs node tests/golden/check_hf_tokenizer.mjs data/kjv/tokenizer.json
//   LLMTK_NODE_MODULES=/tmp/hfrs node tests/golden/check_hf_tokenizer.mjs data/kjv/tokenizer.json --impl rust --extra
// Options:
//   --cases FILE   test strings: JSON ({"cases":[{"text":..}]}, [".."] or [{"text":..}]) or a text
//                  file with one string per line (default: tests/data/gpt2_encodings.json)
//   --impl NAME    tokenizers | rust | transformers | xenova (default tokenizers)
//   --llmtk BIN    the llmtk binary (default: build/bin/llmtk)
//   --plain        run llmtk without --special. HF always matches added tokens ("<|endoftext|>")
//                  in the text, whatever add_special_tokens says, so --special (the default) is
//                  the like-for-like comparison; --plain shows the cases where the two differ.
//   --extra        also run the built-in edge cases below (Unicode whitespace/letter/number classes
//                  the regex engines may disagree on, cl100k's case-insensitive contractions, ...)
//   --show N       mismatches to print (default 5)
// Exit status: 0 when every case agrees, 1 on a mismatch, 2 on a usage or setup error.
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function die(msg) {
  console.error(`check_hf_tokenizer: ${msg}`);
  process.exit(2);
}

// ---- arguments ----
const args = process.argv.slice(2);
const opt = { cases: path.join(repoRoot, 'tests/data/gpt2_encodings.json'), impl: 'tokenizers',
              llmtk: path.join(repoRoot, 'build/bin/llmtk'), plain: false, extra: false, show: 5,
              tokenizer: null };
for (let i = 0; i < args.length; ++i) {
  const a = args[i];
  const value = () => (i + 1 < args.length ? args[++i] : die(`${a} needs a value`));
  if (a === '--cases') opt.cases = value();
  else if (a === '--impl') opt.impl = value();
  else if (a === '--llmtk') opt.llmtk = value();
  else if (a === '--plain') opt.plain = true;
  else if (a === '--extra') opt.extra = true;
  else if (a === '--show') opt.show = Number(value());
  else if (a === '-h' || a === '--help') {
    console.log('usage: node tests/golden/check_hf_tokenizer.mjs TOKENIZER_JSON [--cases FILE] ' +
                '[--impl tokenizers|rust|transformers|xenova] [--llmtk BIN] [--plain] [--extra] [--show N]');
    process.exit(0);
  } else if (a.startsWith('--')) die(`unknown option ${a}`);
  else if (opt.tokenizer === null) opt.tokenizer = a;
  else die(`unexpected argument ${a}`);
}
if (!opt.tokenizer) die('give the tokenizer.json to check (--help for usage)');
if (!['tokenizers', 'rust', 'transformers', 'xenova'].includes(opt.impl)) die(`unknown --impl ${opt.impl}`);
const tokPath = path.resolve(opt.tokenizer);
if (!fs.existsSync(tokPath) || !fs.statSync(tokPath).isFile()) die(`no file '${tokPath}'`);
if (!fs.existsSync(opt.llmtk)) die(`no llmtk binary at '${opt.llmtk}' (--llmtk BIN)`);

// ---- the HF package: LLMTK_NODE_MODULES (an npm --prefix dir or a node_modules dir), NODE_PATH,
// then the ordinary resolution from this file ----
function packageDir(name) {
  const dirs = [process.env.LLMTK_NODE_MODULES, ...(process.env.NODE_PATH || '').split(path.delimiter)]
    .filter(Boolean).map((d) => path.resolve(d));
  for (const d of dirs)
    for (const cand of [path.join(d, 'node_modules', name), path.join(d, name)])
      if (fs.existsSync(path.join(cand, 'package.json'))) return cand;
  try {
    return path.dirname(createRequire(import.meta.url).resolve(`${name}/package.json`));
  } catch {
    die(`cannot find the npm package ${name}; install it outside the repository ` +
        `(npm install --prefix /tmp/hfjs ${name}) and run with LLMTK_NODE_MODULES=/tmp/hfjs`);
  }
}
function esmEntry(dir) {  // the ESM entry for Node: exports["."].node.import, .import, module, main
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  let e = pkg.exports && (pkg.exports['.'] ?? pkg.exports);
  e = e && typeof e === 'object' ? (e.node?.import ?? e.import ?? e.node ?? e.default) : e;
  if (e && typeof e === 'object') e = e.default;
  return { file: path.join(dir, e || pkg.module || pkg.main), version: pkg.version, name: pkg.name };
}
const importFile = (f) => import(pathToFileURL(f).href);

// A temp copy for the from_pretrained loaders: DIR/m/tokenizer.json (+ tokenizer_config.json).
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'llmtk-hfcheck-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));
let configNote = 'none needed (a {} config object is passed to the constructor)';
function localModelCopy() {
  const m = path.join(work, 'models', 'm');
  fs.mkdirSync(m, { recursive: true });
  fs.copyFileSync(tokPath, path.join(m, 'tokenizer.json'));
  const own = path.join(path.dirname(tokPath), 'tokenizer_config.json');
  if (fs.existsSync(own)) {
    fs.copyFileSync(own, path.join(m, 'tokenizer_config.json'));
    configNote = `the one next to the tokenizer.json (${own})`;
  } else {
    fs.writeFileSync(path.join(m, 'tokenizer_config.json'), '{}\n');
    configNote = 'none next to the file, so a minimal "{}" tokenizer_config.json was written to the temp copy';
  }
  return path.join(work, 'models');
}

const decodeOpts = { skip_special_tokens: false, clean_up_tokenization_spaces: false };
let hf;  // { label, encode(text) -> ids, decode(ids) -> text, tokens(text) -> strings } (maybe async)
if (opt.impl === 'rust') {
  const dir = packageDir('tokenizers');
  const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  const { Tokenizer } = createRequire(import.meta.url)(dir);
  const tok = Tokenizer.fromFile(tokPath);
  hf = { label: `tokenizers ${version} (npm; Node binding of the Rust crate)`,
         encode: async (t) => (await tok.encode(t, null, { addSpecialTokens: false })).getIds(),
         tokens: async (t) => (await tok.encode(t, null, { addSpecialTokens: false })).getTokens(),
         decode: (ids) => tok.decode(ids, false) };
  configNote = 'not used (Tokenizer.fromFile)';
} else if (opt.impl === 'tokenizers') {
  const entry = esmEntry(packageDir('@huggingface/tokenizers'));
  const { Tokenizer } = await importFile(entry.file);
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(tokPath, 'utf8')), {});
  hf = { label: `${entry.name} ${entry.version}`,
         encode: (t) => tok.encode(t, { add_special_tokens: false }).ids,
         tokens: (t) => tok.encode(t, { add_special_tokens: false }).tokens,
         decode: (ids) => tok.decode(ids, decodeOpts) };
} else if (opt.impl === 'transformers') {
  const entry = esmEntry(packageDir('@huggingface/transformers'));
  const { env, AutoTokenizer } = await importFile(entry.file);
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = localModelCopy() + path.sep;
  const tok = await AutoTokenizer.from_pretrained('m');
  hf = { label: `${entry.name} ${entry.version} (${tok.constructor.name})`,
         encode: (t) => tok.encode(t, { add_special_tokens: false }),
         tokens: (t) => tok.tokenize(t, { add_special_tokens: false }),
         decode: (ids) => tok.decode(ids, decodeOpts) };
} else {
  const dir = packageDir('@xenova/transformers');
  const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  const { env } = await importFile(path.join(dir, 'src/env.js'));
  const { AutoTokenizer } = await importFile(path.join(dir, 'src/tokenizers.js'));
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = localModelCopy() + path.sep;
  const tok = await AutoTokenizer.from_pretrained('m');
  hf = { label: `@xenova/transformers ${version} (${tok.constructor.name})`,
         encode: (t) => tok.encode(t, null, { add_special_tokens: false }),
         tokens: (t) => tok.tokenize(t, { add_special_tokens: false }),
         decode: (ids) => tok.decode(ids, decodeOpts) };
}

// ---- test strings ----
function loadCases(file) {
  const raw = fs.readFileSync(file, 'utf8');
  let j;
  try { j = JSON.parse(raw); } catch { return raw.split('\n').filter((l, i, a) => i < a.length - 1 || l !== ''); }
  const list = Array.isArray(j) ? j : j.cases;
  if (!Array.isArray(list)) die(`'${file}': expected {"cases": [...]} or an array`);
  return list.map((c) => (typeof c === 'string' ? c : c.text));
}
// Edge cases for --extra: every Unicode White_Space character and the ones JS, Oniguruma and PCRE2
// disagree on (U+0085, U+180E, U+200B, U+FEFF, U+001C..U+001F), between letters, before a letter,
// alone, in runs and before a newline; letter/number classes (combining marks, Nl, No, other
// scripts' digits); cl100k's (?i:'s|...) contractions, \p{N}{1,3} runs and \r\n handling.
const EXTRA = (() => {
  const spaces = [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x180e,
                  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
                  0x200b, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff];
  const out = [];
  for (const cp of spaces) {
    const c = String.fromCodePoint(cp);
    out.push(`a${c}b`, `a ${c}b`, `a${c} b`, `${c}`, `${c}${c}${c}x`, `x${c}${c}`, `a${c}\nb`, `1${c}2`, `!${c}?`);
  }
  out.push("HE'S", "He'S here", "I'LL GO", "we'RE", "THEY'VE", "I'M", "'D", "x'Ll", "it\u2019s",
           '1234567', 'a12345b', '12 345 6789', '\u0661\u0662\u0663\u0664', '\u2160\u2161\u2162 IV',
           'x\u00b2\u00b3 \u00bd\u2153', 'e\u0301te\u0301', ' \u0301abc', '\u0915\u093f\u0924\u093e\u092c',
           '\u05e9\u05c1\u05dc\u05d5\u05b9\u05dd', 'a\r\nb', 'a\r\n\r\nb', 'a \r\n b', 'a.\r\n\r\n',
           '!!!\n\n', '  \n\n  x', '\n\n\n', ' \t \t', 'x\t\ty', '\u{1F600}\u{1F600} \u{1F44D}\u{1F3FD}',
           '\u{1D400}\u{1D401}', '\u{10400}\u{10428}', '\u00dfSS\u0130i\u0131I', 'K\u212a\u017fs',
           '<|endoftext|><|endoftext|>', ' <|endoftext|> ', '<|pad|>x<|endoftext|>', '<|endoftext');
  return out;
})();
const fileTexts = loadCases(opt.cases);
const texts = [...fileTexts, ...(opt.extra ? EXTRA : [])];

// ---- llmtk: one process per string, the string in a file (exact bytes, no argv quoting) ----
const inFile = path.join(work, 'case.txt');
function llmtkEncode(text) {
  fs.writeFileSync(inFile, text, 'utf8');
  const argv = ['tokenizer', 'encode', '--tokenizer', tokPath, '--json', '--input', inFile];
  if (!opt.plain) argv.push('--special');
  const r = spawnSync(opt.llmtk, argv, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.error) throw new Error(`cannot run llmtk: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`llmtk failed (${r.status ?? r.signal}): ${(r.stderr || '').trim()}`);
  return JSON.parse(r.stdout);
}

// ---- compare ----
const tokJson = JSON.parse(fs.readFileSync(tokPath, 'utf8'));
const specials = (tokJson.added_tokens || []).map((a) => a.content);
let idMismatch = 0, decodeMismatch = 0, errors = 0, withSpecial = 0;
const shown = [];
const short = (s, n = 160) => { const q = JSON.stringify(s); return q.length > n ? `${q.slice(0, n)}...(${s.length} chars)` : q; };
const list = (a, n = 40) => `[${a.slice(0, n).join(',')}${a.length > n ? `,... ${a.length} ids` : ''}]`;
for (const text of texts) {
  if (specials.some((s) => text.includes(s))) ++withSpecial;
  let mine, theirs, back;
  try {
    mine = llmtkEncode(text);
    theirs = Array.from(await hf.encode(text), Number);
    back = theirs.length ? await hf.decode(theirs) : '';
  } catch (e) {
    ++errors;
    if (shown.length < opt.show) shown.push(`ERROR ${short(text)}: ${e.message}`);
    continue;
  }
  const same = mine.length === theirs.length && mine.every((v, k) => v === theirs[k]);
  if (!same) {
    ++idMismatch;
    if (shown.length < opt.show) {
      let k = 0;
      while (k < Math.min(mine.length, theirs.length) && mine[k] === theirs[k]) ++k;
      shown.push(`ids differ: text ${short(text)}\n  llmtk ${list(mine)}\n  hf    ${list(theirs)}\n` +
                 `  first difference at index ${k}; hf tokens ${short((await hf.tokens(text)).slice(0, 30), 400)}`);
    }
  }
  if (back !== text) {
    ++decodeMismatch;
    if (shown.length < opt.show) shown.push(`decode differs: text ${short(text)}\n  hf decode ${short(back)}`);
  }
}

console.log(`tokenizer:      ${tokPath}`);
console.log(`implementation: ${hf.label}; tokenizer_config: ${configNote}`);
console.log(`llmtk:          ${opt.llmtk} tokenizer encode --json --input FILE${opt.plain ? '' : ' --special'}`);
console.log(`cases:          ${texts.length}: ${fileTexts.length} from ${opt.cases}${opt.extra ? ` + ${EXTRA.length} built-in (--extra)` : ''} (${withSpecial} contain an added token: ${JSON.stringify(specials)})`);
console.log(`id mismatches:  ${idMismatch}`);
console.log(`decode != text: ${decodeMismatch}`);
console.log(`errors:         ${errors}`);
for (const s of shown) console.log(`- ${s}`);
const ok = idMismatch === 0 && decodeMismatch === 0 && errors === 0;
console.log(ok ? 'OK' : 'FAILED');
process.exitCode = ok ? 0 : 1;
