// llmtk arch list | arch show NAME [--set model.KEY=VALUE ...] [--batch B --seq T] [--json]
#include <fmt/core.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "core/communicator.hpp"
#include "core/error.hpp"
#include "models/registry.hpp"
#include "train/distributed.hpp"

namespace llmtk::cli {

namespace {

std::string grouped(std::int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string human_bytes(std::int64_t bytes) {
  double b = double(bytes);
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.1f} {}", b, units[u]);
}

std::string human_flops(double f) {
  const char* units[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (f >= 1000 && u < 4) f /= 1000, ++u;
  return fmt::format("{:.2f} {}FLOP", f, units[u]);
}

// Tensor parallel planned without processes: the model laid out as rank 0 of `size` ranks (every
// rank's sizes are the same), never communicating.
class PlannedRanks final : public Communicator {
 public:
  explicit PlannedRanks(int size) : size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  int local_rank() const override { return 0; }
  int local_size() const override { return size_; }
  std::string name() const override { return "planned"; }
  void all_reduce_sum(TensorRef, const std::string& what) override { refuse(what); }
  void all_reduce_sum(double*, std::int64_t, const std::string& what) override { refuse(what); }
  void reduce_scatter_sum(TensorRef, TensorRef, const std::vector<std::int64_t>&, const std::string& what) override { refuse(what); }
  void all_gather(TensorRef, TensorRef, const std::string& what) override { refuse(what); }
  void broadcast(void*, std::size_t, Device, int, const std::string& what) override { refuse(what); }
  void barrier(const std::string& what) override { refuse(what); }
  std::unique_ptr<Communicator> split(int, int, const std::string& what) override { refuse(what); }
  [[noreturn]] void abort(int exit_code) override { std::exit(exit_code); }

 private:
  [[noreturn]] static void refuse(const std::string& what) { fail("arch show", "plans memory and never communicates (", what, ")"); }
  int size_;
};

struct ShowArgs {
  std::string name;
  std::vector<std::string> sets;
  std::int64_t batch = 8, seq = 0;
  std::string precision = "fp32";
  std::vector<std::string> freeze;
  bool json = false;
  int ranks = 1;
  std::string strategy = "ddp";
  int tp_size = 0;
  double bucket_mb = 25;
};

void show(const ShowArgs& a) {
  const ArchInfo& info = find_arch(a.name);
  const Dims dims = dims_with_overrides(info, a.sets, "arch show");
  const std::int64_t T = a.seq > 0 ? a.seq : dims.max_seq;
  // --ranks N: the memory of one of N data-parallel processes, each planned for its rows of the
  // batch; ZeRO-1 shards the optimizer state, ZeRO-2 the gradients too (docs/distributed.md).
  // Tensor parallel: groups of tp_size ranks each hold a share of every layer, data-parallel
  // across the groups (and sharding each share's state across them with tp+zero1, tp+zero2).
  LLMTK_CHECK(a.ranks > 1 || a.strategy == "ddp", "arch show", "--strategy ", a.strategy, " works among ranks: give --ranks N (N > 1)");
  const bool tensor = a.strategy.starts_with("tp");
  LLMTK_CHECK(tensor || a.tp_size == 0, "arch show", "--tp-size goes with --strategy tp, tp+zero1 or tp+zero2");
  const int tp = tensor ? (a.tp_size > 0 ? a.tp_size : a.ranks) : 1, data_ranks = a.ranks / tp;
  LLMTK_CHECK(a.ranks % tp == 0, "arch show", "--tp-size ", tp, " does not divide --ranks ", a.ranks, "; give a divisor of ", a.ranks);
  const int zero = a.strategy.ends_with("zero1") ? 1 : a.strategy.ends_with("zero2") ? 2 : 0;
  LLMTK_CHECK(zero == 0 || data_ranks > 1, "arch show", "--strategy ", a.strategy, " shards across tensor parallel's data-parallel "
              "groups, but --tp-size ", tp, " leaves one group of all ", a.ranks, " ranks; give --tp-size below --ranks");
  LLMTK_CHECK(a.batch % data_ranks == 0, "arch show", "--batch ", a.batch, " is the global batch and does not divide among the ",
              data_ranks, " data-parallel ", tensor ? "groups" : "ranks", "; give a multiple of ", data_ranks);
  const std::int64_t B = a.batch / data_ranks;
  // Tensor parallel keeps f32 activations in a bf16 run (its sums exchange f32), as training does.
  const DType act_dtype = a.precision == "bf16" && !tensor ? DType::bf16 : DType::f32;
  PlannedRanks shares(tp);
  auto model = info.make(dims);  // checks every size rule
  model->set_precision(act_dtype);
  if (tp > 1) model->set_tensor_parallel(shares);  // the tp_divides_* rules
  if (!a.freeze.empty()) model->freeze(a.freeze);  // train.freeze: no gradient, no optimizer state
  model->plan(B, T);

  const double fwd = model->forward_flops_per_token(T);
  // f32 parameters and gradients; AdamW keeps two moments per parameter. bf16 (docs/bf16.md):
  // activations in bf16, plus a bf16 working copy of every weight a matmul reads.
  const std::int64_t trainable = model->trainable_count(), frozen = model->param_count() - trainable;
  const bool sharded = zero > 0;
  const std::int64_t shard = shard_range(trainable, 0, data_ranks).size();  // the first rank's: the largest
  const std::int64_t param_bytes = model->param_count() * 4,
                     grad_bytes = zero == 2 ? std::int64_t(train::DataParallel::gradient_bytes(model->grads(), a.bucket_mb, true,
                                                                                               data_ranks, 0))
                                            : trainable * 4,
                     optim_bytes = 2 * 4 * (sharded ? shard : trainable), working_bytes = std::int64_t(model->working().bytes());
  const std::int64_t act_bytes = std::int64_t(model->acts().bytes());
  const std::int64_t total = param_bytes + grad_bytes + optim_bytes + working_bytes + act_bytes;
  auto recomputed = info.make(dims);  // the same model with train.recompute = "blocks"
  recomputed->set_precision(act_dtype);
  if (tp > 1) recomputed->set_tensor_parallel(shares);
  recomputed->plan(B, T, true);
  const std::int64_t act_recompute = std::int64_t(recomputed->acts().bytes());

  if (a.json) {
    nlohmann::json j;
    j["arch"] = info.name;
    j["structure"] = model->structure();
    j["dims"] = {{"d_model", dims.d_model}, {"n_layers", dims.n_layers}, {"n_heads", dims.n_heads},
                 {"n_kv_heads", dims.n_kv_heads}, {"d_ff", dims.d_ff}, {"vocab", dims.vocab},
                 {"max_seq", dims.max_seq}, {"rope_base", dims.rope_base}, {"window", dims.window},
                 {"norm_eps", dims.norm_eps}, {"bias", dims.bias}};
    for (const auto& pv : dims.part)  // keys the parts own (MoE's moe_experts...)
      if (pv.name[0] != 0) {
        if (dim_kind(pv.name) == KeyKind::boolean) j["dims"][pv.name] = pv.value != 0;
        else if (dim_kind(pv.name) == KeyKind::integer) j["dims"][pv.name] = std::int64_t(pv.value);
        else j["dims"][pv.name] = pv.value;
      }
    // The whole model's parameters; under tensor parallel the rest (trainable and frozen counts,
    // parts, memory) are one rank's share, params_per_rank.
    j["params"] = tensor ? model->whole_like(model->params(), "whole").numel() : model->param_count();
    j["active_params"] = model->active_param_count();  // per token: an MoE's chosen experts only
    j["trainable_params"] = trainable, j["frozen_params"] = frozen;
    nlohmann::json parts = nlohmann::json::array();
    for (const auto& p : model->parts())
      parts.push_back({{"path", p.path}, {"type", p.type}, {"params", p.params}, {"note", p.note}});
    j["parts"] = parts;
    j["batch"] = a.batch, j["seq"] = T, j["precision"] = a.precision;
    j["ranks"] = a.ranks, j["strategy"] = a.strategy, j["tp_size"] = tp, j["rows_per_rank"] = B;  // memory_bytes: per process
    j["params_per_rank"] = model->param_count();  // tensor parallel: a share of the model
    j["flops_per_token"] = {{"forward", fwd}, {"training", 3 * fwd}};
    j["memory_bytes"] = {{"params", param_bytes}, {"grads", grad_bytes},
                         {"optimizer", optim_bytes}, {"working_copy", working_bytes}, {"activations", act_bytes},
                         {"activations_recompute_blocks", act_recompute}, {"total", total}};
    fmt::print("{}\n", j.dump(2));
    return;
  }

  fmt::print("{}: {}\n\nstructure\n", info.name, info.about);
  for (const auto& line : model->structure()) fmt::print("  {}\n", line);
  fmt::print("\ndims\n ");
  for (const auto& [k, v] : dims_as_keys(dims)) fmt::print(" {}={}", k, v);
  fmt::print("\n\nparameters\n");
  for (const auto& p : model->parts()) {
    std::string path = std::string(2 * p.depth, ' ') + p.path;
    fmt::print("  {:<18} {:<42} {:>15}  {}\n", path, p.type, grouped(p.params), p.note);
  }
  fmt::print("  {:<18} {:<42} {:>15}\n", "total", "", grouped(model->param_count()));
  if (model->active_param_count() != model->param_count())
    fmt::print("  {:<18} {:<42} {:>15}   (what one token's forward reads: the experts its router chose)\n",
               "active per token", "", grouped(model->active_param_count()));
  if (frozen)
    fmt::print("  {:<18} {:<42} {:>15}\n  {:<18} {:<42} {:>15}   (no gradient, no optimizer state: {} saved)\n",
               "trainable", "", grouped(trainable), "frozen", "", grouped(frozen), human_bytes(3 * 4 * frozen));
  fmt::print("\ncompute per token at seq {}\n  forward   {}\n  training  {} (forward + backward, 3x)\n",
             T, human_flops(fwd), human_flops(3 * fwd));
  fmt::print("\nmemory for one training step at batch {} x seq {} ({}, AdamW)\n", a.batch, T,
             act_dtype == DType::bf16 ? "bf16 activations, f32 master weights; on cuda a bf16 run keeps f32 activations for now"
             : a.precision == "bf16"  ? "bf16 matmuls, f32 activations under tensor parallel"
                                      : "fp32");
  if (a.ranks > 1)
    fmt::print("  per process of {} ({}: {}{} rows each{})\n", a.ranks, a.strategy,
               tensor ? fmt::format("{} of the model's {} parameters, ", grouped(model->param_count()),
                                    grouped(model->whole_like(model->params(), "whole").numel()))
                      : std::string(),
               B,
               zero == 2   ? fmt::format("; the optimizer state and the gradients sharded, the stacks' gradients in a ring of "
                                         "two buckets of {} MB or a layer", a.bucket_mb)
               : zero == 1 ? std::string("; the optimizer state sharded")
                           : std::string());
  fmt::print("  parameters       {:>12}\n  gradients        {:>12}\n  optimizer state  {:>12}\n", human_bytes(param_bytes),
             human_bytes(grad_bytes), human_bytes(optim_bytes));
  if (working_bytes) fmt::print("  bf16 weights     {:>12}   (the matmuls' working copy)\n", human_bytes(working_bytes));
  fmt::print("  activations      {:>12}   ({} with train.recompute = \"blocks\")\n  total            {:>12}\n",
             human_bytes(act_bytes), human_bytes(act_recompute), human_bytes(total));
}

}  // namespace

void add_arch_commands(CLI::App& app) {
  auto* arch = app.add_subcommand("arch", "Inspect the registered model architectures");
  arch->require_subcommand(1);

  auto* list = arch->add_subcommand("list", "List registered architectures");
  list->callback([] {
    // Columns as wide as their longest entry, so that any registered name lines up. The variants
    // of an ablation (docs/experiments.md) follow their group's heading, indented.
    std::vector<std::string> counts;
    std::size_t name_w = 4, count_w = 6;
    for (const auto& a : architectures()) {
      auto m = a.make(a.dims);
      m->plan(1, 1);
      counts.push_back(grouped(m->param_count()));
      name_w = std::max(name_w, a.name.size() + (a.group.empty() ? 0 : 2)), count_w = std::max(count_w, counts.back().size());
    }
    fmt::print("{:<{}}  {:>{}}  {}\n", "name", name_w, "params", count_w, "about");
    const auto& all = architectures();
    for (std::size_t i = 0; i < all.size(); ++i) {
      const ArchInfo& a = all[i];
      if (a.group.empty()) {
        fmt::print("{:<{}}  {:>{}}  {}\n", a.name, name_w, counts[i], count_w, a.about);
        continue;
      }
      if (i == 0 || all[i - 1].group != a.group) {
        std::size_t n = 0;
        for (const auto& b : all) n += b.group == a.group;
        fmt::print("{}  ({} variants: {})\n", a.group, n, a.about);
      }
      fmt::print("  {:<{}}  {:>{}}\n", a.name, name_w - 2, counts[i], count_w);
    }
    for (const auto& s : skipped_variants()) fmt::print("skipped  {}\n", s);
  });

  auto args = std::make_shared<ShowArgs>();
  auto* sh = arch->add_subcommand("show", "Structure, parameters, FLOPs and memory of one architecture");
  sh->add_option("name", args->name, "Architecture name (llmtk arch list)")->required();
  sh->add_option("--set", args->sets, "Override a size: --set model.n_layers=6 (repeatable)");
  sh->add_option("--batch", args->batch, "Batch size for the memory estimate")->check(CLI::Range(1, 1 << 20));
  sh->add_option("--seq", args->seq, "Sequence length (default: model.max_seq)")->check(CLI::Range(1, 1 << 24));
  sh->add_option("--precision", args->precision, "fp32, or bf16: activations in bf16 (train.precision)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  sh->add_option("--freeze", args->freeze,
                 "Freeze parameters matching a pattern, as train.freeze (repeatable): --freeze 'embed.*'");
  sh->add_flag("--json", args->json, "Print one JSON object");
  sh->add_option("--ranks", args->ranks, "Processes: the memory per process, each planned for its rows (batch / ranks; tensor parallel: its group's)")
      ->check(CLI::Range(1, 1 << 20));
  sh->add_option("--strategy", args->strategy,
                 "With --ranks: ddp, zero1 (the optimizer state sharded), zero2 (and the gradients), tp (each layer split), "
                 "tp+zero1 or tp+zero2 (tensor parallel in groups of --tp-size, the groups sharding as zero1 or zero2)")
      ->check(CLI::IsMember({"ddp", "zero1", "zero2", "tp", "tp+zero1", "tp+zero2"}));
  sh->add_option("--tp-size", args->tp_size, "With --strategy tp...: the ranks that split each layer (distributed.tp_size; 0: all)")
      ->check(CLI::Range(0, 1 << 16));
  sh->add_option("--bucket-mb", args->bucket_mb, "With --strategy zero2 or tp+zero2: the gradient buckets' size (distributed.bucket_mb)")
      ->check(CLI::Range(0.001, 1024.0));
  sh->callback([args] { show(*args); });
}

}  // namespace llmtk::cli
