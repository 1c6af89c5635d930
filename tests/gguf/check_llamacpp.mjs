// Loads a GGUF file written by `llmtk export --gguf` into llama.cpp (node-llama-cpp's prebuilt CPU
// binary) and compares it with what llmtk computed for the same model:
//   - token ids of every string in STRINGS (one JSON string per line) against llmtk's ids;
//   - the log-probability of every next token after a prompt against llmtk's (max |difference|
//     over tokens with probability ≥ 1e-4 must stay within TOL);
//   - the ids of greedy decoding (when GREEDY is "exact").
// usage: node check_llamacpp.mjs MODEL.gguf STRINGS.jsonl LLMTK_IDS.jsonl LLMTK_GENERATE.json TOL exact|skip
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [model_path, strings_path, ids_path, gen_path, tol_arg, greedy] = process.argv.slice(2);
const tol = Number(tol_arg);
const strings = readFileSync(strings_path, "utf8").trim().split("\n").map((l) => JSON.parse(l));
const want_ids = readFileSync(ids_path, "utf8").trim().split("\n").map((l) => JSON.parse(l));
const want = JSON.parse(readFileSync(gen_path, "utf8"));

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: model_path, gpuLayers: 0});
let failures = 0;
const fail = (what) => { console.log("FAIL " + what); ++failures; };

// 1. Tokenization: llama.cpp's GPT-2 pre-tokenizer and BPE merges against llmtk's.
let same = 0;
strings.forEach((s, i) => {
  const got = Array.from(model.tokenize(s, false));
  if (JSON.stringify(got) === JSON.stringify(want_ids[i])) ++same;
  else if (failures < 5) fail(`tokens of ${JSON.stringify(s)}: llama.cpp ${JSON.stringify(got)}, llmtk ${JSON.stringify(want_ids[i])}`);
});
console.log(`tokenization: ${same} of ${strings.length} strings give llmtk's ids`);
if (same !== strings.length) ++failures;

// 2. Next-token log-probabilities after the prompt (temperature 0: the full softmax).
// llama.cpp keeps keys and values in f16 and runs flash attention on f16 queries by default: f32
// keys and values and plain attention here, so an f32 file is compared in f32 (1e-6, not 6e-4).
const context = await model.createContext({
  contextSize: Math.max(64, want.prompt_ids.length + want.generated_ids.length + 1),
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", flashAttention: false});
const seq = context.getSequence();
const prompt = want.prompt_ids;
const items = prompt.map((t, i) => i === prompt.length - 1
    ? [t, {generateNext: {token: true, probabilities: true, options: {temperature: 0}}}] : t);
const out = await seq.controlledEvaluate(items);
const probs = out[prompt.length - 1].next.probabilities;
let worst = 0, compared = 0;
want.next_logprobs.forEach((lp, id) => {
  if (lp < Math.log(1e-4)) return;
  const p = probs.get(id) ?? 0;
  worst = Math.max(worst, Math.abs(Math.log(p) - lp));
  ++compared;
});
console.log(`next-token log-probabilities: max |llama.cpp - llmtk| = ${worst.toExponential(3)} over ${compared} tokens (tolerance ${tol})`);
if (!(worst <= tol)) fail("log-probabilities differ by more than the tolerance");

// 3. Greedy decoding from the prompt, as many tokens as llmtk generated.
if (greedy === "exact") {
  await seq.clearHistory();
  const gen = [];
  for await (const t of seq.evaluate(prompt, {temperature: 0, yieldEogToken: true})) {
    gen.push(t);
    if (gen.length >= want.generated_ids.length) break;
  }
  const ok = JSON.stringify(gen) === JSON.stringify(want.generated_ids);
  console.log(`greedy decoding of ${gen.length} tokens: ${ok ? "the same ids" : "DIFFERENT"}`);
  console.log(`  llama.cpp: ${JSON.stringify(model.detokenize(gen))}`);
  if (!ok) fail(`greedy ids: llama.cpp ${JSON.stringify(gen)}, llmtk ${JSON.stringify(want.generated_ids)}`);
}
await context.dispose();
await model.dispose();
await llama.dispose();
process.exit(failures ? 1 : 0);
