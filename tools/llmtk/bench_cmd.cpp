// llmtk bench step: time full training steps (forward, backward, optimizer) of an architecture
// on random tokens, after a warm-up, and print tokens/s, the median ms per step and MFU.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/optimizer.hpp"
#include "train/step.hpp"
#include "train/trainer.hpp"

namespace llmtk::cli {

namespace {

struct BenchArgs {
  std::string arch, precision = "fp32", device = "cpu";
  std::int64_t batch = 4, seq = 64;
  int steps = 5, warmup = 1;
  std::vector<std::string> sets;
  bool json = false;
  bool grad_norm = false;
};

void bench(const BenchArgs& a) {
  const ArchInfo& info = find_arch(a.arch);
  const Dims dims = dims_with_overrides(info, a.sets, "bench step");
  (void)train::matmul_peak_override();  // a bad value stops here, not after the timed steps
  ops::require_backend(a.device);
  ops::set_matmul_precision(a.precision == "bf16" ? DType::bf16 : DType::f32);
  auto model = info.make(dims);
  model->set_precision(ops::activation_dtype(a.precision));  // as train (docs/bf16.md)
  model->plan(a.batch, a.seq);
  model->init(1);
  train::Recipe::Optim oc;
  train::Optimizer opt(oc, model->params());
  NextTokenLoss objective;
  // What `llmtk train` runs, without clipping; the gradient norm (one more pass over the
  // gradients, which the trainer's non-finite guard and clipping need) only with --grad-norm.
  train::TrainStep step(*model, objective, opt, {0.0, a.grad_norm});
  Rng rng(7);
  std::vector<std::int32_t> ids(std::size_t(a.batch * a.seq)), tg(ids.size());
  for (auto& v : ids) v = std::int32_t(rng.next() % std::uint64_t(dims.vocab));
  for (std::size_t i = 0; i < ids.size(); ++i) tg[i] = ids[(i + 1) % ids.size()];
  const train::Batch batch{{TensorRef(ids.data(), DType::i32, {a.batch, a.seq}), {}, {}},
                           {TensorRef(tg.data(), DType::i32, {a.batch, a.seq}), {}}};
  std::vector<double> ms;
  for (int s = 0; s < a.warmup + a.steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    step.run([&] { return batch; }, 1, 1e-4, s + 1);
    current_memory().synchronize();  // a GPU runs the step asynchronously
    const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= a.warmup) ms.push_back(dt);
    if (s + 1 == a.warmup) ops::profile_reset();  // LLMTK_PROFILE: the timed steps only
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double tokens = double(a.batch * a.seq), tps = tokens / (median / 1000.0);
  const double flops = 3.0 * model->forward_flops_per_token(a.seq), peak = train::measure_matmul_peak_flops();
  nlohmann::ordered_json j = {{"tool", "llmtk"}, {"arch", a.arch}, {"device", a.device}, {"precision", a.precision},
                              {"batch", a.batch}, {"seq", a.seq}, {"params", model->param_count()},
                              {"active_params", model->active_param_count()}, {"steps", a.steps},
                              {"ms_per_step", median}, {"tokens_per_s", tps}, {"flops_per_token", flops},
                              {"achieved_gflops", flops * tps / 1e9}, {"matmul_peak_gflops", peak / 1e9},
                              {"mfu", flops * tps / peak}, {"backend_info", ops::backend_info()}};
  if (a.json) {
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("{} on {} ({}), batch {} x seq {}: {:.1f} ms/step (median of {}), {:.0f} tokens/s, {:.1f} GFLOP/s, "
               "MFU {:.1f}% of the measured {:.1f} GFLOP/s matmul peak\n",
               a.arch, a.device, a.precision, a.batch, a.seq, median, a.steps, tps, flops * tps / 1e9,
               100 * flops * tps / peak, peak / 1e9);
    fmt::print("backend: {}\n", ops::backend_info());
  }
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  auto* b = app.add_subcommand("bench", "Measure speed");
  b->require_subcommand(1);
  auto ba = std::make_shared<BenchArgs>();
  auto* st = b->add_subcommand("step", "Time full training steps (forward, loss, backward, AdamW) on random tokens");
  st->add_option("--arch", ba->arch, "Architecture (llmtk arch list)")->required();
  st->add_option("--batch", ba->batch, "Batch size")->check(CLI::Range(1, 1 << 16));
  st->add_option("--seq", ba->seq, "Sequence length")->check(CLI::Range(1, 1 << 20));
  st->add_option("--steps", ba->steps, "Timed steps")->check(CLI::Range(1, 100000));
  st->add_option("--warmup", ba->warmup, "Untimed steps first")->check(CLI::Range(0, 1000));
  st->add_option("--precision", ba->precision, "fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  st->add_option("--device", ba->device, device_list())->check(device_names());
  st->add_option("--set", ba->sets, "Override a size: --set model.n_layers=2");
  st->add_flag("--json", ba->json, "Print one JSON object");
  st->add_flag("--grad-norm", ba->grad_norm, "Also measure the global gradient norm, as llmtk train does");
  st->callback([ba] { bench(*ba); });
}

}  // namespace llmtk::cli
