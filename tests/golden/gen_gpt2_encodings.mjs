// Generates tests/data/gpt2_encodings.json: GPT-2 (r50k_base) byte-level BPE token ids for a
// fixed, deterministic list of test strings, computed by two independent JavaScript encoders
// that must agree on every case:
//   * gpt-3-encoder  (AIDungeon, MIT): a port of OpenAI's gpt-2/src/encoder.py that reads the
//     original encoder.json / vocab.bpe (the same files as tests/data/gpt2/);
//   * gpt-tokenizer  (MIT): a tiktoken port; its 'gpt-tokenizer/encoding/r50k_base' module uses
//     tiktoken's r50k_base ranks (= the GPT-2 vocabulary, ids 0..50256).
//
// Setup (once, in any directory outside the repository):
//   npm install --prefix /tmp/gpt2ref gpt-3-encoder gpt-tokenizer
// Run from the repository root:
//   LLMTK_NODE_MODULES=/tmp/gpt2ref node tests/golden/gen_gpt2_encodings.mjs
// (NODE_PATH=/tmp/gpt2ref/node_modules works as well; either the --prefix directory or its
// node_modules directory may be given, several NODE_PATH entries are tried in order.)
// Options: --check  compare with the existing tests/data/gpt2_encodings.json instead of writing.
//
// The script also checks that tests/data/gpt2/{encoder.json,vocab.bpe} are byte-identical to
// the files shipped in the gpt-3-encoder package, and that gpt-tokenizer's decode() returns
// each text unchanged. It exits non-zero, writing nothing, if any check or case disagrees.
//
// Special tokens: "<|endoftext|>" in the texts below is ordinary text and is encoded as such
// (27 91 437 1659 5239 91 29 for "<|endoftext|>"), never as id 50256. gpt-3-encoder knows no
// special tokens at all. gpt-tokenizer throws "Disallowed special token found" by default, so it
// is called with { disallowedSpecial: new Set() }, which disables that check and (with no
// allowedSpecial) encodes the string as plain text.
//
// Texts avoid characters whose class differs between JavaScript's \s and Python's \s (U+FEFF,
// U+001C..U+001F next to other characters), lone surrogates, and characters assigned only in
// recent Unicode versions, so the ids equal those of OpenAI's Python encoder / tiktoken.
// Output: {"generator": "...", "cases": [{"text": "...", "ids": [...]}, ...]}, one case per line.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

function resolvePackage(spec) {
  const dirs = [process.env.LLMTK_NODE_MODULES, ...(process.env.NODE_PATH || '').split(path.delimiter)]
    .filter(Boolean);
  for (const dir of dirs) {
    try { return require.resolve(spec, { paths: [path.resolve(dir)] }); } catch { /* next */ }
  }
  try { return require.resolve(spec); } catch {
    console.error(`cannot find '${spec}'. Install with: npm install --prefix DIR gpt-3-encoder gpt-tokenizer\n` +
                  `and run with LLMTK_NODE_MODULES=DIR (or NODE_PATH=DIR/node_modules).`);
    process.exit(2);
  }
}

const g3Main = resolvePackage('gpt-3-encoder');
const g3Dir = path.dirname(resolvePackage('gpt-3-encoder/package.json'));
const g3 = require(g3Main);
const g3Version = require(path.join(g3Dir, 'package.json')).version;
const gt = require(resolvePackage('gpt-tokenizer/encoding/r50k_base'));
const gtVersion = require(resolvePackage('gpt-tokenizer/package.json')).version;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const outFile = path.join(repoRoot, 'tests', 'data', 'gpt2_encodings.json');

// --- the vendored vocabulary must be the one gpt-3-encoder encodes with --------------------
for (const f of ['encoder.json', 'vocab.bpe']) {
  const mine = fs.readFileSync(path.join(repoRoot, 'tests', 'data', 'gpt2', f));
  const theirs = fs.readFileSync(path.join(g3Dir, f));
  if (!mine.equals(theirs)) {
    console.error(`tests/data/gpt2/${f} differs from ${path.join(g3Dir, f)}`);
    process.exit(1);
  }
}

// --- test strings ---------------------------------------------------------------------------
const cases = [];
const add = (...texts) => { for (const t of texts) cases.push(t); };

// Empty string and every single ASCII character (control characters included).
add('');
for (let c = 0; c < 128; c++) add(String.fromCharCode(c));

// Single non-ASCII characters: 2-, 3- and 4-byte UTF-8, byte-encoder look-alikes, marks.
add('é', 'ß', 'ÿ', 'Ā', 'Ġ', 'Ċ', 'ł', '€', '£', '¥', '©', '°', '±', '×', '÷', '—', '–', '…',
    '“', '”', '‘', '’', '•', '→', '∑', '∞', '√', '≠', 'Ω', 'π', 'µ', 'ﬁ', 'ǅ', 'ª', 'º',
    '中', '日', 'あ', 'ア', 'ｱ', '한', 'я', 'ع', 'ש', 'λ', 'क', 'ก', '\u0301', '\u200d', '\ufe0f',
    '\u00a0', '\u3000', '\u2028', '\ufffd', '\ue000', '😀', '👍', '🇺', '𝔘', '𝟙', '𠀀');

// Plain English.
add('Hello world',
    'Hello, world!',
    'The quick brown fox jumps over the lazy dog.',
    'THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG',
    'the quick brown fox jumps over the lazy dog',
    'It was the best of times, it was the worst of times.',
    'GPT-2 is a large transformer-based language model with 1.5 billion parameters.',
    'Machine learning is fun. Tokenization is, too!',
    'A man, a plan, a canal: Panama.',
    'Is this the real life? Is this just fantasy?',
    'She sells sea shells by the sea shore.',
    'Supercalifragilisticexpialidocious',
    'antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis',
    'OpenAI GPT2 HuggingFace PyTorch TensorFlow llmtk',
    'camelCaseIdentifier snake_case_identifier SCREAMING_SNAKE kebab-case-name',
    'Mr. Smith went to Washington D.C. on Jan. 5th.',
    'e.g. i.e. etc. vs. a.k.a.',
    'Email: john.doe@example.com, web: https://example.com/path?q=1&x=y#frag',
    '#hashtag @mention $TICKER %percent ^caret &amp *star',
    'Hello World Hello World Hello World',
    ' Hello', 'Hello ', ' Hello ', 'hello', 'HELLO', 'hElLo',
    'Ġhello Ċworld ĠĠ',
    'a', 'I', 'A b C d E f');

// Contractions: the GPT-2 pattern has 's 't 're 've 'm 'll 'd, lowercase and ASCII ' only.
for (const s of ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]) {
  add(`it${s}`, `IT${s.toUpperCase()}`, s, ` ${s}`);
}
add("I'm sure we'll see what they've done, and you'd say it's what we're doing, don't you?",
    "He's here. She'd've known. They'll've gone. Y'all ain't ready.",
    "IT'S WE'RE THEY'VE I'M WE'LL YOU'D DON'T",
    "It'S We'Re They'Ve I'M We'Ll You'D Don'T",
    'It’s we’re they’ve I’m we’ll you’d don’t',
    'It‘s ‘quoted’ “double” ‚low‘ «guillemets» ‹single›',
    "rock 'n' roll, 'twas, 'tis, o'clock, ma'am, O'Neill, Lu'lu",
    "'s's's 'll'll ''s '''t ' s 'S",
    "the dog's bone, the dogs' bones, James's car",
    "'hello' \"hello\" `hello`",
    "don''t can''t");

// Numbers and dates.
add('1', '12', '123', '1234', '12345', '123456', '1234567', '12345678901234567890',
    '0', '00', '007', '-1', '+1', '-42', '3.14', '3.14159265358979323846', '.5', '0.001',
    '1,000', '1,000,000', '1.000.000,50', '1 000 000', '$1,234.56', '€99', '50%', '100km/h',
    '1e10', '6.022e23', '6.022E-23', '0xDEADBEEF', '0b1010', '1/2', '3:4', '10^9', '2**10',
    'v1.2.3', '1st 2nd 3rd 4th 21st', 'Room 101, floor 3, building 42B',
    '2024-01-15', '15/01/2024', '01/15/24', 'Jan 15, 2024', '15 January 2024', '12:34:56',
    '2024-01-15T12:34:56.789Z', '+1 (555) 123-4567', 'ISBN 978-3-16-148410-0',
    'In 1969, 3 astronauts flew 384,400 km.', 'pi is about 3.14159 and e is 2.71828',
    '١٢٣٤', '१२३४', '１２３４', '²³¹', '½ ¼ ¾', 'Ⅻ ⅻ', '𝟙𝟚𝟛',
    '123abc', 'abc123', 'a1b2c3', '123 456 789', ' 1 2 3');

// Code.
add('#include <iostream>\n\nint main() {\n    std::cout << "Hello, world!" << std::endl;\n    return 0;\n}\n',
    'template <typename T>\nT max(T a, T b) { return a > b ? a : b; }\n',
    'for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n',
    'std::vector<std::pair<int, std::string>> v{{1, "one"}, {2, "two"}};',
    'auto x = ptr->field; x <<= 2; y >>= 3; z ^= ~w; if (a && b || !c) {}',
    'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
    'class Foo:\n    """Docstring."""\n\n    def __init__(self, x: int = 0) -> None:\n        self.x = x\n',
    'print(f"{name!r:>10} = {value:.3f}")  # comment',
    'lambda x, *args, **kwargs: (x, args, kwargs)',
    'import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\n',
    '{"name": "llmtk", "version": "0.1.0", "deps": [], "nested": {"a": 1, "b": [true, false, null]}}',
    '{\n  "key": "value",\n  "list": [\n    1,\n    2\n  ]\n}\n',
    '#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do\n  echo "$f" | wc -c\ndone\n',
    'ls -la /usr/local/bin | grep -v "^d" > out.log 2>&1 && cat out.log',
    'all: main.o\n\t$(CC) -o $@ $^ $(LDFLAGS)\n',
    'SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;',
    '<div class="container"><p>Hello &amp; welcome!</p></div>',
    '## Title\n\n- item one\n- **bold** and _italic_\n\n```cpp\nint x;\n```\n',
    '$\\frac{a}{b} + \\sum_{i=0}^{n} x_i^2$',
    'fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!("{:?}", v); }',
    'const f = async (x) => { await g(x ?? 0); return x?.y; };',
    '\t\tindented with tabs\n\t\t\tmore\n',
    '    four spaces\n        eight spaces\n',
    'if x:\r\n    y = 1\r\nelse:\r\n    y = 2\r\n',
    '/* block comment */ // line comment',
    '=====\n-----\n*****\n#####\n',
    'aGVsbG8gd29ybGQhIFRoaXMgaXMgYmFzZTY0Lg==',
    '550e8400-e29b-41d4-a716-446655440000',
    'C:\\Users\\name\\Documents\\file.txt',
    'https://github.com/openai/gpt-2/blob/master/src/encoder.py#L53');

// Whitespace.
add('Hello  world', 'Hello   world', 'Hello    world', 'Hello world ', 'Hello world  ',
    'Hello world\n', 'Hello world\n\n', '\nHello', '\n\nHello\n\n', 'a\nb', 'a\n\nb', 'a \nb',
    'a\n b', 'a \n b', 'a  \n  b', 'a\r\nb', 'a\r\n\r\nb', 'a\rb', '\r\n', '\r', '\n\r',
    'a\tb', 'a\t\tb', '\ta', 'a\t', ' \t ', '\t \t', 'a \t b', ' ', '  ', '   ', '\n', '\n\n',
    '\n\n\n', '\t', '\t\t', ' \n', '\n ', ' \n ', '  \n\n  ', 'x\f\vy', '\f', '\v',
    'a\u00a0b', 'a \u00a0b', '\u00a0\u00a0', 'a\u3000b', 'a\u2003b', 'a\u2028b', 'a\u2029b',
    'a\u0085b', 'a\u200bb', '  leading and trailing  ', 'end with newline\n', ' \n\t\r\n ');

// Punctuation runs (commas included: gpt-3-encoder keys its merge table by "first,second").
add('!', '!!', '!!!', '!!!!!!!!!!!!!!!!', '?!', '?!?!?!', '...', '....', '…', '---', '--',
    '—', '===', '==>', '<<>>', '->', '=>', '::', '//', '/**/', '()', '[]', '{}', '()[]{}<>',
    '!@#$%^&*()_+-=[]{}|;\':",./<>?`~', ',', ',,', ',,,', ',,,,,,,,,,,,', ', , ,', 'a,b,c',
    '1,2,3', ',.', '.,', ',",', '",', '",",",', "','", ',\'s', '-,', ',-', ',.,.,.', '.,.,.,',
    '"\'', '\'"', '"""', "'''", '``', '~~~', '***', '___', '|||', '\\\\', '\\n', '%%', '&&',
    ' !', ' !!', ' ...', 'Wait... what?!', 'Hello!!! Are you there???', '(a), [b], {c}; <d>.',
    '¡Hola! ¿Qué tal?', '«Bonjour», dit-il.', '。、！？「」『』（）', '・ー〜', '•◦▪▫■□',
    '★☆♥♦♣♠', '©®™', '§¶†‡', '∀x∈ℝ: x²≥0', '≤≥≠≈∞', '←↑→↓↔', '+-*/%=', '#!', '$$$');

// Emoji.
add('😀', '😀😀😀', 'I love you ❤️', '❤', '👍🏽', '👍🏻👍🏼👍🏽👍🏾👍🏿', '👨‍👩‍👧‍👦', '👩‍💻', '🧑🏿‍💻',
    '🏳️‍🌈', '🏴‍☠️', '🇺🇸', '🇯🇵🇰🇷🇨🇳', '🇩🇪 Germany', '1️⃣ 2️⃣ #️⃣', 'Great job! 🎉🎉',
    'rocket🚀launch', ' 🔥', '🤖 + 🧠 = 💡', '☕ coffee', '✔ done ✘ failed', '👁️‍🗨️');

// CJK.
add('你好，世界！', '我爱自然语言处理。', '机器学习是人工智能的一个分支。', '中文 English 混合 mixed',
    '繁體中文與簡體中文', '𠀀𠀁𠀂', 'こんにちは世界', 'カタカナとひらがな', 'ｶﾀｶﾅ ﾊﾝｶｸ',
    '日本語のテキストです。東京は大きい都市です。', 'ラーメンを食べたい！', '안녕하세요 세계',
    '한국어 텍스트입니다.', '\u1100\u1161\u11a8', '한국 中国 日本');

// Other scripts.
add('Привет, мир!', 'Съешь же ещё этих мягких французских булок, да выпей чаю.', 'ПРИВЕТ МИР',
    'Ёлка и ёж', 'Україна, Беларусь, Србија, България',
    'مرحبا بالعالم', 'اللغة العربية جميلة.', 'العدد ١٢٣ و 456', '\u200fمرحبا\u200e hello',
    'שלום עולם', 'שָׁלוֹם', 'עברית ו-English',
    'Γειά σου Κόσμε', 'Η γρήγορη καφέ αλεπού', 'ΑΒΓΔΕ αβγδε ς',
    'नमस्ते दुनिया', 'हिन्दी भाषा', 'क्षत्रिय', 'বাংলা ভাষা', 'தமிழ்', 'ਪੰਜਾਬੀ',
    'สวัสดีครับ', 'ภาษาไทย', 'Tiếng Việt có dấu', 'ქართული', 'Հայերեն', 'አማርኛ', 'ᚠᛇᚻ᛫ᛒᛦᚦ');

// Accented Latin, precomposed (NFC) and combining (NFD) forms.
add('café', 'cafe\u0301', 'naïve', 'nai\u0308ve', 'résumé', 're\u0301sume\u0301', 'Ångström',
    'A\u030angstro\u0308m', 'Zürich', 'Zu\u0308rich', 'façade', 'fac\u0327ade', 'Crème brûlée',
    'Cre\u0300me bru\u0302le\u0301e', 'Tiê\u0301ng Viê\u0323t', 'ñ n\u0303', 'ÀÉÎÕÜ',
    'straße STRASSE', 'Łódź', 'Dvořák', 'Ærøskøbing', 'İstanbul ıi', 'ǅemal', 'ﬁnance ﬂow',
    'e\u0301\u0301\u0301', 'Z\u0351\u0352\u0353a\u0354\u0355l\u0356\u0357g\u0358\u0359o');

// Mixed scripts.
add('Hello世界123мир', 'iPhone 15 Pro Max — $999', 'abc١٢٣', 'Привет world 你好 🌍',
    'API接口v2.0版本', 'Tokyo東京Tōkyō', 'α-helix β-sheet', 'x = α + β·γ', 'ABCабвΑΒΓ',
    'emoji😀in中文text', 'COVID-19疫情', 'naïve café 中文 😀 123');

// "<|endoftext|>" as literal text (encoded as ordinary text, never as id 50256).
add('<|endoftext|>', 'Hello<|endoftext|>World', 'Hello <|endoftext|> World',
    '<|endoftext|><|endoftext|>', 'end.<|endoftext|>\n', '<|endoftext|', '|endoftext|>',
    '<|endoftext|>The next document starts here.', '<|im_start|>user\nhi<|im_end|>');

// Long and repetitive strings.
add('a'.repeat(64), 'a'.repeat(500), 'ab'.repeat(100), ' '.repeat(100), '\n'.repeat(40),
    '\t'.repeat(20), '1234567890'.repeat(10), '!'.repeat(100), '😀'.repeat(20),
    '中'.repeat(50), 'the '.repeat(50), 'Hello world! '.repeat(20));

// A long paragraph (~2 KB).
add([
  'Tokenization is the first step of almost every language model pipeline, and it is easy to get',
  'subtly wrong. A byte-level BPE tokenizer such as the one used by GPT-2 first splits the input',
  'with a regular expression into words, numbers, runs of punctuation and runs of whitespace; then',
  'each piece is turned into bytes, every byte is mapped to a printable stand-in character, and the',
  "merge table is applied greedily, always merging the adjacent pair with the lowest rank. It's a",
  "simple algorithm, but the details matter: contractions like don't and we'll are split off,",
  'a single leading space is glued to the following word, and a run of spaces before a word leaves',
  'its last space for that word. Numbers are not split into digits, so 2024 and 1,000,000 may become',
  'one or several tokens depending on the vocabulary. Text in other scripts (Русский, 中文, العربية,',
  'हिन्दी) falls back to byte pieces when no merge covers it, which is why such text usually needs',
  'many more tokens than English. Emoji like 🚀 or 👨‍👩‍👧 are several bytes long and rarely merged.',
  'Finally, the special marker <|endoftext|> is, for this test, plain text rather than a control',
  'token, so it must be split like any other sequence of punctuation and letters.\n\n',
  'In practice, a tokenizer is validated against a reference on a large and varied corpus: plain',
  'prose, source code with tabs and deep indentation, JSON and shell scripts, tables of numbers,',
  'dates such as 2024-01-15 or 15/01/2024, and messy user input with trailing spaces, repeated',
  'punctuation!!! and mixed scripts. Every mismatch found this way is a bug worth fixing, because',
  'a model trained on one segmentation sees out-of-distribution input when given another. The cost',
  'of checking is small; the cost of a silent mismatch can be a model that quietly performs worse.',
  'So the test data below mixes all of these on purpose, including whitespace at the very end of a',
  'line, Windows line endings, and words that are spelled the same but capitalised differently, e.g.',
  'Apple, apple and APPLE, which map to entirely different token ids in the GPT-2 vocabulary.   ',
].join(' '));

// Programmatic combinations: whitespace/newline prefixes and suffixes around typical pieces.
const pieces = ['hello', 'Hello', '123', '!!!', "'s", '世界', '😀', 'é', '\u0301'];
for (const p of pieces) for (const pre of [' ', '  ', '\n', '\t', ' \n ']) add(pre + p);
for (const p of pieces) for (const suf of [' ', '  ', '\n']) add(p + suf);
for (let n = 1; n <= 8; n++) add('x' + ' '.repeat(n) + 'y', 'x' + '\n'.repeat(n) + 'y');
for (let n = 1; n <= 6; n++) add('1'.repeat(n) + '.' + '5'.repeat(n));

// --- encode, compare, decode ----------------------------------------------------------------
const seen = new Set();
const unique = [];
for (const t of cases) if (!seen.has(t)) { seen.add(t); unique.push(t); }

const plain = { disallowedSpecial: new Set() };
const out = [];
let bad = 0;
for (const text of unique) {
  const a = g3.encode(text);
  const b = gt.encode(text, plain);
  if (a.length !== b.length || a.some((v, i) => v !== b[i])) {
    bad++;
    console.error(`DISAGREE ${JSON.stringify(text)}\n  gpt-3-encoder: ${JSON.stringify(a)}\n  gpt-tokenizer: ${JSON.stringify(b)}`);
    continue;
  }
  if (b.some((v) => !Number.isInteger(v) || v < 0 || v >= 50256)) {
    bad++;
    console.error(`BAD ID ${JSON.stringify(text)}: ${JSON.stringify(b)}`);
    continue;
  }
  const back = gt.decode(b);
  if (back !== text) {
    bad++;
    console.error(`ROUND-TRIP ${JSON.stringify(text)} -> ${JSON.stringify(back)}`);
    continue;
  }
  out.push({ text, ids: b });
}
if (bad) {
  console.error(`${bad} of ${unique.length} cases failed; nothing written.`);
  process.exit(1);
}

const generator = `tests/golden/gen_gpt2_encodings.mjs: gpt-3-encoder ${g3Version} and ` +
  `gpt-tokenizer ${gtVersion} (encoding/r50k_base) agree on every case; node ${process.version}; ` +
  `<|endoftext|> encoded as plain text`;
const json = '{\n' +
  `  "generator": ${JSON.stringify(generator)},\n` +
  '  "cases": [\n' +
  out.map((c) => `    {"text": ${JSON.stringify(c.text)}, "ids": ${JSON.stringify(c.ids)}}`).join(',\n') +
  '\n  ]\n}\n';

if (process.argv.includes('--check')) {
  const old = JSON.parse(fs.readFileSync(outFile, 'utf8'));
  const fresh = JSON.parse(json);
  if (JSON.stringify(old.cases) !== JSON.stringify(fresh.cases)) {
    console.error(`${outFile} is out of date (or differs); rerun without --check.`);
    process.exit(1);
  }
  console.log(`${outFile}: ${fresh.cases.length} cases, up to date.`);
} else {
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, json);
  const tokens = out.reduce((s, c) => s + c.ids.length, 0);
  console.log(`wrote ${path.relative(repoRoot, outFile)}: ${out.length} cases, ${tokens} tokens ` +
              `(gpt-3-encoder ${g3Version}, gpt-tokenizer ${gtVersion}, node ${process.version})`);
}
