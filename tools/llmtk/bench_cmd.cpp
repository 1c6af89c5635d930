// llmtk bench step: time full training steps (forward, backward, optimizer) of an architecture
// on random tokens, after a warm-up, and print tokens/s, the median ms per step and MFU.
#include <fmt/core.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/optimizer.hpp"
#include "core/communicator.hpp"
#include "train/distributed.hpp"
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
  double bucket_mb = 25;
  bool no_overlap = false;
  std::string strategy = "ddp";
};

void bench(const BenchArgs& a) {
  const ArchInfo& info = find_arch(a.arch);
  const Dims dims = dims_with_overrides(info, a.sets, "bench step");
  (void)train::matmul_peak_override();  // a bad value stops here, not after the timed steps
  // Under mpirun: data parallel, each rank a part of the batch (docs/distributed.md); on GPUs the
  // gradients go over NCCL, opened (each rank on its local GPU) before the backend allocates.
  Communicator& world_comm = world();
  std::unique_ptr<Communicator> nccl;
  if (world_comm.size() > 1 && a.device == "cuda") nccl = open_nccl(world_comm);
  Communicator& comm = nccl ? *nccl : world_comm;
  ops::require_backend(a.device);
  ops::set_matmul_precision(a.precision == "bf16" ? DType::bf16 : DType::f32);
  const int ranks = comm.size();
  LLMTK_CHECK(a.batch % ranks == 0, "bench step", "--batch ", a.batch, " does not divide among ", ranks, " processes");
  if (ranks > 1) ops::set_threads(train::threads_per_rank(comm));
  const std::int64_t rows = a.batch / ranks;
  auto model = info.make(dims);
  model->set_precision(ops::activation_dtype(a.precision));  // as train (docs/bf16.md)
  model->plan(rows, a.seq);
  model->init(1);
  train::Recipe::Optim oc;
  // ZeRO-1 and ZeRO-2 shard the optimizer state (docs/distributed.md).
  train::Optimizer opt(oc, model->params(), ranks > 1 && a.strategy != "ddp" ? &comm : nullptr);
  const std::size_t whole_grads = model->grads().bytes();
  NextTokenLoss objective;
  // What `llmtk train` runs, without clipping; the gradient norm (one more pass over the
  // gradients, which the trainer's non-finite guard and clipping need) only with --grad-norm.
  train::TrainStep step(*model, objective, opt, {0.0, a.grad_norm});
  std::optional<train::DataParallel> dp;
  const ShardRange shard = opt.shard();
  if (ranks > 1)
    dp.emplace(comm, model->grads(), a.bucket_mb, !a.no_overlap, a.strategy == "zero2" ? &shard : nullptr), step.set_data_parallel(&*dp);
  Rng rng(7 + std::uint64_t(comm.rank()));
  std::vector<std::int32_t> ids(std::size_t(rows * a.seq)), tg(ids.size());
  for (auto& v : ids) v = std::int32_t(rng.next() % std::uint64_t(dims.vocab));
  for (std::size_t i = 0; i < ids.size(); ++i) tg[i] = ids[(i + 1) % ids.size()];
  const train::Batch batch{{TensorRef(ids.data(), DType::i32, {rows, a.seq}), {}, {}},
                           {TensorRef(tg.data(), DType::i32, {rows, a.seq}), {}}};
  std::vector<double> ms, comm_ms;
  for (int s = 0; s < a.warmup + a.steps; ++s) {
    const double c0 = dp ? dp->comm_seconds() : 0;
    const auto t0 = std::chrono::steady_clock::now();
    step.run([&] { return batch; }, 1, 1e-4, s + 1);
    current_memory().synchronize();  // a GPU runs the step asynchronously
    const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= a.warmup) ms.push_back(dt), comm_ms.push_back(dp ? 1000 * (dp->comm_seconds() - c0) : 0);
    if (s + 1 == a.warmup) ops::profile_reset();  // LLMTK_PROFILE: the timed steps only
  }
  std::sort(ms.begin(), ms.end());
  std::sort(comm_ms.begin(), comm_ms.end());
  const double median = ms[ms.size() / 2];
  const double tokens = double(a.batch * a.seq), tps = tokens / (median / 1000.0);
  // MFU against every rank's peak (each measures its own, with its threads).
  const double flops = 3.0 * model->forward_flops_per_token(a.seq), peak = train::measure_matmul_peak_flops() * ranks;
  // Memory per process: what the arenas hold, and the largest resident set the process reached.
  const double mib = 1024.0 * 1024.0;
  const double grads = double(dp ? dp->gradient_bytes() : whole_grads);
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  const double rss = double(usage.ru_maxrss) * 1024.0;  // KiB on Linux
  double rss_max = rss;
  if (ranks > 1) comm.all_reduce_sum(&rss_max, 1, "the resident sets");  // the sum; divided below
  if (comm.rank() != 0) return;
  nlohmann::ordered_json memory = {{"params_mib", double(model->params().bytes()) / mib}, {"grads_mib", grads / mib},
                                   {"grads_unsharded_mib", double(whole_grads) / mib},
                                   {"optimizer_mib", double(opt.state_bytes()) / mib}, {"activations_mib", double(model->acts().bytes()) / mib},
                                   {"max_rss_mib_mean", rss_max / ranks / mib}};
  nlohmann::ordered_json j = {{"tool", "llmtk"}, {"arch", a.arch}, {"device", a.device}, {"precision", a.precision},
                              {"activations", name_of(model->precision())}, {"batch", a.batch}, {"seq", a.seq}, {"params", model->param_count()},
                              {"active_params", model->active_param_count()}, {"steps", a.steps},
                              {"ms_per_step", median}, {"tokens_per_s", tps}, {"flops_per_token", flops},
                              {"achieved_gflops", flops * tps / 1e9}, {"matmul_peak_gflops", peak / 1e9},
                              {"mfu", flops * tps / peak}, {"ranks", ranks},
                              {"comm_ms_per_step", comm_ms[comm_ms.size() / 2]}, {"overlap", dp && dp->overlaps()}, {"strategy", ranks > 1 ? a.strategy : "single"},
                              {"memory_per_process", memory}, {"backend_info", ops::backend_info()}};
  if (a.json) {
    fmt::print("{}\n", j.dump());
  } else {
    // bf16 with f32 activations (the CUDA backend's default for now, or LLMTK_BF16_ACTIVATIONS=0) says so.
    const std::string how = a.precision == "bf16" && model->precision() != DType::bf16 ? "bf16, f32 activations" : a.precision;
    fmt::print("{} on {} ({}), batch {} x seq {}: {:.1f} ms/step (median of {}), {:.0f} tokens/s, {:.1f} GFLOP/s, "
               "MFU {:.1f}% of the measured {:.1f} GFLOP/s matmul peak\n",
               a.arch, a.device, how, a.batch, a.seq, median, a.steps, tps, flops * tps / 1e9,
               100 * flops * tps / peak, peak / 1e9);
    if (ranks > 1)
      fmt::print("{} processes ({}), {}: {} rows each, {} buckets{}; waiting for gradient sums {:.1f} ms of the step "
                 "(median)\n", ranks, comm.name(), a.strategy, rows, dp->buckets(), dp->overlaps() ? " overlapped with the backward" : "",
                 comm_ms[comm_ms.size() / 2]);
    fmt::print("memory per process: parameters {:.1f} MiB, gradients {:.1f} MiB, optimizer state {:.1f} MiB, activations {:.1f} MiB; "
               "largest resident set {:.1f} MiB (mean over processes)\n", memory["params_mib"].get<double>(), grads / mib,
               memory["optimizer_mib"].get<double>(), memory["activations_mib"].get<double>(), rss_max / ranks / mib);
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
  st->add_option("--bucket-mb", ba->bucket_mb, "Under mpirun: the gradient buckets' size (distributed.bucket_mb)")->check(CLI::Range(0.001, 1024.0));
  st->add_flag("--no-overlap", ba->no_overlap, "Under mpirun: sum the gradients after the backward instead of during it");
  st->add_option("--strategy", ba->strategy, "Under mpirun: ddp, zero1 (the optimizer state sharded) or zero2 (and the gradients)")
      ->check(CLI::IsMember({"ddp", "zero1", "zero2"}));
  st->callback([ba] { bench(*ba); });
}

}  // namespace llmtk::cli
