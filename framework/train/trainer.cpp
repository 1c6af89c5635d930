#include "trainer.hpp"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../core/error.hpp"
#include "../data/loader.hpp"
#include "../models/registry.hpp"
#include "../ops/ops.hpp"
#include "generate.hpp"
#include "hf.hpp"
#include "optimizer.hpp"
#include "safetensors.hpp"
#include "schedule.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using clock_type = std::chrono::steady_clock;

namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) { g_stop = 1; }

std::vector<std::string> shards(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) {
      const auto name = e.path().filename().string();
      if (name.starts_with(prefix) && name.ends_with(".bin")) out.push_back(e.path().string());
    }
  std::sort(out.begin(), out.end());
  return out;
}

// Peak resident memory of this process, from /proc (Linux).
std::int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

}  // namespace

std::optional<double> matmul_peak_override() {
  const char* e = std::getenv("LLMTK_MATMUL_PEAK_GFLOPS");
  if (!e || !*e) return std::nullopt;
  char* end = nullptr;
  const double g = std::strtod(e, &end);
  LLMTK_CHECK(end && *end == '\0' && g > 0, "LLMTK_MATMUL_PEAK_GFLOPS", "is '", e,
              "'; set it to a positive number of GFLOP/s, or unset it to measure");
  return g * 1e9;
}

double measure_matmul_peak_flops() {
  // LLMTK_MATMUL_PEAK_GFLOPS in the environment replaces the measurement (the same MFU
  // denominator across runs on a shared machine; emulated devices, where timing means nothing).
  if (const auto peak = matmul_peak_override()) return *peak;
  // In the active backend's memory and in the matmul precision, so that a bf16 peak is the bf16
  // product alone (no rounding of f32 inputs inside the timed call). The square product grows
  // from 1024 until one takes at least 2 ms (or reaches 8192): long enough to time and to reach
  // a GPU's peak (1024³ is far too small there), and 1024 on a CPU.
  const DeviceMemory& mem = current_memory();
  const bool half = ops::matmul_precision() == DType::bf16;
  const DType in = half ? DType::bf16 : DType::f32;
  for (std::int64_t n = 1024;; n *= 2) {
    const std::size_t count = static_cast<std::size_t>(n * n);
    std::vector<float> a(half ? 0 : count, 0.5f), b(half ? 0 : count, 0.25f);
    std::vector<bf16> a16(half ? count : 0, bf16(0.5f)), b16(half ? count : 0, bf16(0.25f));
    Arena m("matmul peak");
    const int ia = m.add("a", {n, n}, in), ib = m.add("b", {n, n}, in), ic = m.add("c", {n, n});
    m.allocate(mem);
    m.write(ia, half ? static_cast<const void*>(a16.data()) : a.data());
    m.write(ib, half ? static_cast<const void*>(b16.data()) : b.data());
    auto seconds = [&] {
      mem.synchronize();
      const auto t0 = clock_type::now();
      ops::matmul_forward(m[ic], m[ia], m[ib], TensorRef{});
      mem.synchronize();
      return std::chrono::duration<double>(clock_type::now() - t0).count();
    };
    seconds();  // first call: plan and warm-up
    if (n < 8192 && seconds() < 2e-3) continue;
    // The best of 12 after 2 more warm-ups: on a shared machine single runs vary by 2x.
    double best = 1e30;
    for (int i = 0; i < 14; ++i) {
      const double t = seconds();
      if (i >= 2) best = std::min(best, t);
    }
    return 2.0 * double(n * n * n) / best;
  }
}

namespace {

std::string step_dir(std::int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

void write_text(const std::string& path, const std::string& s) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    LLMTK_CHECK(out.good(), "train", "cannot write '", tmp, "'");
    out << s;
  }
  fs::rename(tmp, path);
}

}  // namespace

std::string find_checkpoint(const std::string& dir) {
  LLMTK_CHECK(fs::is_directory(dir), "resume", "'", dir, "' is not a directory");
  if (fs::exists(fs::path(dir) / "state.json")) return dir;
  const fs::path ckpts = fs::path(dir) / "checkpoints";
  std::string newest;
  if (fs::is_directory(ckpts))
    for (const auto& e : fs::directory_iterator(ckpts)) {
      const auto name = e.path().filename().string();
      if (name.starts_with("step_") && fs::exists(e.path() / "state.json") && name > fs::path(newest).filename().string())
        newest = e.path().string();
    }
  LLMTK_CHECK(!newest.empty(), "resume", "no checkpoint in '", dir, "' (looked for checkpoints/step_*/state.json)");
  return newest;
}

TrainResult train(const Recipe& r, const TrainOptions& opt) {
  auto log = opt.log ? opt.log : [](const std::string& s) { std::printf("%s\n", s.c_str()); std::fflush(stdout); };
  TrainResult res;
  res.run_dir = opt.run_dir.empty() ? (fs::path("runs") / fs::path(r.file).stem()).string() : opt.run_dir;
  // Ctrl-C from here on stops after the current step with a checkpoint, even during set-up.
  g_stop = 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  struct RestoreSignals {
    ~RestoreSignals() {
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
    }
  } restore_signals;

  // ---- setup: backend, threads, data, model, optimizer ----
  (void)matmul_peak_override();  // a bad value stops here, before the run directory exists
  ops::require_backend(r.train.device);
  // bf16: matmuls round their inputs to bf16 and accumulate in f32; weights, gradients and the
  // optimizer state stay f32 (the reference backend ignores it).
  ops::set_matmul_precision(r.train.precision == "bf16" ? DType::bf16 : DType::f32);
  if (r.train.threads > 0) omp_set_num_threads(r.train.threads);
  const auto train_shards = shards(r.data.dir, "train_"), val_shards = shards(r.data.dir, "val_");
  LLMTK_CHECK(!train_shards.empty(), r.file, "data.dir = \"", r.data.dir,
              "\" holds no train_*.bin shards; run llmtk data prepare first (see recipes/data/)");
  const std::string tok_path = (fs::path(r.data.dir) / "tokenizer.json").string();
  auto tok = data::load_tokenizer(tok_path);
  LLMTK_CHECK(tok->vocab_size() <= r.model.dims.vocab, r.file, "the tokenizer in ", r.data.dir, " has ",
              tok->vocab_size(), " tokens but model.vocab is ", r.model.dims.vocab, "; set model.vocab = ",
              tok->vocab_size());
  data::LoaderOptions lo{r.train.batch, r.train.seq, data::parse_order(r.data.order), r.train.seed, 0, 1};
  data::DataLoader loader(train_shards, tok->hash(), lo);
  std::unique_ptr<data::DataLoader> val_loader;
  if (!val_shards.empty())
    val_loader = std::make_unique<data::DataLoader>(
        val_shards, tok->hash(), data::LoaderOptions{r.train.batch, r.train.seq, data::DataOrder::sequential, 0, 0, 1});

  auto model = make_model(r.model.arch, r.model.dims);
  model->plan(r.train.batch, r.train.seq, r.train.recompute == "blocks");
  model->init(r.train.seed);
  if (!opt.init_hf.empty()) {
    import_hf(*model, opt.init_hf);
    log("initialised from the Transformers checkpoint in " + opt.init_hf);
  }
  Optimizer optimizer(r.optim, model->params());
  const std::int64_t total = r.total_steps();
  Schedule sched{r.schedule.name, r.optim.lr, r.schedule.min_lr, r.schedule.warmup, total, r.schedule.decay_fraction};

  // ---- resume ----
  std::int64_t step = 0;
  double best_val = INFINITY;
  if (!opt.resume.empty()) {
    const std::string ck = find_checkpoint(opt.resume);
    std::ifstream in(fs::path(ck) / "state.json");
    json st = json::parse(in);
    LLMTK_CHECK(st.at("arch") == r.model.arch, "resume", "checkpoint ", ck, " is a ", st.at("arch").get<std::string>(),
                " model, the recipe asks for ", r.model.arch);
    LLMTK_CHECK(st.at("tokenizer_hash") == std::to_string(tok->hash()), "resume", "checkpoint ", ck,
                " was trained with another tokenizer than ", tok_path);
    load_safetensors((fs::path(ck) / "model.safetensors").string(), model->params());
    auto state = optimizer.state();
    for (std::size_t i = 0; i < state.size(); ++i)
      load_safetensors((fs::path(ck) / ("optimizer." + state[i]->name() + ".safetensors")).string(), *state[i]);
    step = st.at("step");
    // null when no evaluation ran before the checkpoint
    best_val = st.contains("best_val_loss") && st["best_val_loss"].is_number() ? st["best_val_loss"].get<double>() : INFINITY;
    loader.seek({st.at("data").at("epoch"), st.at("data").at("step")});
    log("resumed from " + ck + " at step " + std::to_string(step));
  }

  fs::create_directories(fs::path(res.run_dir) / "checkpoints");
  write_text((fs::path(res.run_dir) / "recipe.toml").string(), to_toml(r));
  const std::string metrics_path = (fs::path(res.run_dir) / "metrics.jsonl").string();
  if (!opt.resume.empty() && fs::exists(metrics_path)) {  // keep the history up to the resumed step
    std::ifstream in(metrics_path);
    std::string line, kept;
    while (std::getline(in, line))
      if (!line.empty() && json::parse(line).value("step", 0) <= step) kept += line + "\n";
    write_text(metrics_path, kept);
  } else {
    write_text(metrics_path, "");
  }
  std::ofstream metrics(metrics_path, std::ios::app);

  const double fwd_flops = model->forward_flops_per_token(r.train.seq);
  const double peak = measure_matmul_peak_flops();
  const std::int64_t tokens_per_step = r.train.batch * r.train.seq * r.train.grad_accum;
  {
    std::ostringstream s;
    s << "model " << r.model.arch << ": " << model->param_count() << " parameters, "
      << (model->params().bytes() * 2 + optimizer.state_bytes() + model->acts().bytes()) / (1 << 20)
      << " MiB (parameters, gradients, optimizer state, activations), " << 3 * fwd_flops / 1e6
      << " MFLOP per token to train\n"
      << "data: " << loader.tokens() << " training tokens, " << loader.batches_per_epoch() << " batches per epoch; "
      << total << " steps of " << tokens_per_step << " tokens on " << r.train.device << " ("
      << ops::backend_info() << "); matmul peak here " << peak / 1e9 << " GFLOP/s";
    log(s.str());
  }

  // ---- helpers ----
  std::vector<std::int32_t> ids(std::size_t(r.train.batch * r.train.seq)), targets(ids.size());
  TensorRef tid(ids.data(), DType::i32, {r.train.batch, r.train.seq}), ttg(targets.data(), DType::i32, {r.train.batch, r.train.seq});
  // The gradient norm² accumulates where the gradients are; one float comes back to the host.
  Arena scalars("scalars");
  const int norm_id = scalars.add("grad_norm2", {1});
  scalars.allocate();
  auto grad_norm = [&] {
    scalars.zero();
    for (int i = 0; i < int(model->grads().entries().size()); ++i) ops::sum_squares(scalars[norm_id], model->grads()[i]);
    float norm2 = 0;
    scalars.read(norm_id, &norm2);
    return std::sqrt(double(norm2));
  };
  auto scale_grads = [&](float s) {
    for (int i = 0; i < int(model->grads().entries().size()); ++i) ops::scale_forward(model->grads()[i], model->grads()[i], s);
  };
  auto evaluate = [&]() -> double {
    if (!val_loader) return NAN;
    val_loader->seek({0, 0});
    const std::int64_t n = std::min<std::int64_t>(r.eval.batches, std::int64_t(val_loader->batches_per_epoch()));
    double sum = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      val_loader->next(ids, targets);
      sum += model->forward(tid, ttg);
    }
    return sum / double(n);
  };
  auto save = [&](std::int64_t at_step, double val_loss, const std::string& name) {
    const fs::path dir = fs::path(res.run_dir) / "checkpoints" / name;
    const fs::path tmp = fs::path(res.run_dir) / "checkpoints" / (name + ".tmp");
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    save_safetensors((tmp / "model.safetensors").string(), model->params(),
                     {{"format", "pt"}, {"arch", r.model.arch}, {"step", std::to_string(at_step)}});
    for (Arena* a : optimizer.state()) save_safetensors((tmp / ("optimizer." + a->name() + ".safetensors")).string(), *a);
    json st;
    const auto pos = loader.position();
    st["step"] = at_step;
    st["arch"] = r.model.arch;
    st["dims"] = json::object();
    for (const auto& [k, v] : dims_as_keys(r.model.dims)) st["dims"][k] = v;
    st["data"] = {{"epoch", pos.epoch}, {"step", pos.step}, {"dir", r.data.dir}};
    st["tokenizer"] = tok_path;
    st["tokenizer_hash"] = std::to_string(tok->hash());
    st["val_loss"] = std::isfinite(val_loss) ? json(val_loss) : json(nullptr);
    st["best_val_loss"] = std::isfinite(best_val) ? json(best_val) : json(nullptr);
    st["recipe"] = to_toml(r);
    write_text((tmp / "state.json").string(), st.dump(2) + "\n");
    fs::remove_all(dir);
    fs::rename(tmp, dir);  // the checkpoint appears whole or not at all
    return dir.string();
  };
  auto prune = [&] {
    std::vector<std::string> steps;
    for (const auto& e : fs::directory_iterator(fs::path(res.run_dir) / "checkpoints"))
      if (e.path().filename().string().starts_with("step_") && !e.path().filename().string().ends_with(".tmp"))
        steps.push_back(e.path().string());
    std::sort(steps.begin(), steps.end());
    for (std::size_t i = 0; i + std::size_t(r.checkpoint.keep) < steps.size(); ++i) fs::remove_all(steps[i]);
  };
  auto sample = [&](std::int64_t at_step) {
    if (r.log.sample_prompt.empty()) return;
    auto gen = make_model(r.model.arch, r.model.dims);
    gen->plan(1, 1);
    gen->allocate();
    gen->params().copy_from(model->params());
    auto prompt = tok->encode(r.log.sample_prompt);
    GenerateOptions g;
    g.max_tokens = r.log.sample_tokens, g.seed = r.train.seed;
    const auto out = generate(*gen, prompt, g);
    std::ofstream f(fs::path(res.run_dir) / "samples.txt", std::ios::app);
    f << "--- step " << at_step << " ---\n" << r.log.sample_prompt << tok->decode(out) << "\n";
  };

  // ---- the loop ----
  int bad_steps = 0;
  double val_loss = NAN;
  const auto t_start = clock_type::now();
  auto t_log = clock_type::now();
  std::int64_t tokens_since_log = 0;
  double last_loss = NAN;
  while (step < total) {
    const double lr = sched.at(step);
    model->zero_grad();
    double loss = 0;
    for (std::int64_t micro = 0; micro < r.train.grad_accum; ++micro) {
      loader.next(ids, targets);
      loss += model->forward(tid, ttg);
      model->backward();
    }
    loss /= double(r.train.grad_accum);
    if (r.train.grad_accum > 1) scale_grads(1.0f / float(r.train.grad_accum));
    const double norm = grad_norm();
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      ++bad_steps;
      log("warning: step " + std::to_string(step + 1) + " has a non-finite " + (std::isfinite(loss) ? "gradient" : "loss") +
          "; skipped (" + std::to_string(bad_steps) + " in a row)");
      if (bad_steps >= r.train.max_bad_steps) {
        res.checkpoint = save(step, val_loss, step_dir(step));
        fail("train", bad_steps, " steps in a row had non-finite values at step ", step + 1,
             "; the last good state is saved in ", res.checkpoint,
             ". Lower optim.lr, raise schedule.warmup or set optim.grad_clip, then resume with --resume ", res.run_dir);
      }
      continue;
    }
    bad_steps = 0;
    if (r.optim.grad_clip > 0 && norm > r.optim.grad_clip) scale_grads(float(r.optim.grad_clip / norm));
    optimizer.step(model->params(), model->grads(), lr, step + 1);
    ++step;
    last_loss = loss;
    tokens_since_log += tokens_per_step;

    const bool eval_now = (r.eval.every > 0 && step % r.eval.every == 0) || step == total;
    const bool log_now = step % r.log.every == 0 || step == total || eval_now;
    if (log_now) {
      const auto now = clock_type::now();
      const double secs = std::chrono::duration<double>(now - t_log).count();
      const double tps = double(tokens_since_log) / std::max(secs, 1e-9);
      const double elapsed = std::chrono::duration<double>(now - t_start).count();
      json m = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tps},
                {"mfu", 3 * fwd_flops * tps / peak}, {"peak_memory_bytes", peak_rss_bytes()}, {"elapsed_s", elapsed}};
      metrics << m.dump() << "\n" << std::flush;
      const double eta = double(total - step) * double(tokens_per_step) / std::max(tps, 1e-9);
      char line[256];
      std::snprintf(line, sizeof line, "step %6lld/%lld  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s  eta %.0fs",
                    static_cast<long long>(step), static_cast<long long>(total), loss, lr, norm, tps, eta);
      if (opt.progress_bar) {
        const int width = 24, done = int(double(width) * double(step) / double(total));
        std::printf("\r[%s%s] %s", std::string(std::size_t(done), '#').c_str(), std::string(std::size_t(width - done), '.').c_str(), line);
        std::fflush(stdout);
      } else {
        log(line);
      }
      t_log = now, tokens_since_log = 0;
    }
    if (eval_now) {
      val_loss = evaluate();
      json m = {{"step", step}, {"val_loss", val_loss}, {"val_ppl", std::exp(val_loss)}};
      metrics << m.dump() << "\n" << std::flush;
      if (opt.progress_bar) std::printf("\n");
      char line[128];
      std::snprintf(line, sizeof line, "eval  step %lld  val loss %.4f  perplexity %.1f", static_cast<long long>(step), val_loss,
                    std::exp(val_loss));
      log(line);
      sample(step);
      if (r.checkpoint.keep_best && std::isfinite(val_loss) && val_loss < best_val) {
        best_val = val_loss;
        save(step, val_loss, "best");
      }
    }
    if (opt.stop_after > 0 && step >= opt.stop_after) g_stop = 1;
    if ((r.checkpoint.every > 0 && step % r.checkpoint.every == 0) || step == total || g_stop) {
      res.checkpoint = save(step, val_loss, step_dir(step));
      prune();
    }
    if (g_stop) {
      if (opt.progress_bar) std::printf("\n");
      log("interrupted: checkpoint written to " + res.checkpoint + "; continue with --resume " + res.run_dir);
      res.interrupted = true;
      break;
    }
  }
  if (opt.progress_bar) std::printf("\n");
  res.steps = step, res.loss = last_loss, res.val_loss = val_loss;
  if (res.checkpoint.empty()) res.checkpoint = find_checkpoint(res.run_dir);
  return res;
}

}  // namespace llmtk::train
