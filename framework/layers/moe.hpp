// Mixture of experts as a feed-forward part: MoE<Expert, Router>. E experts of any feed-forward
// type, a router that sends each token to k of them, optional shared experts that see every token.
//
//   logits = x · w_routerᵀ                              [N, E]
//   probs = softmax(logits); top-k experts per token, gate weights from their probabilities
//   y[n] = Σ_j gate[n, j] · Expert_{index[n, j]}(x[n]) + Σ_s Shared_s(x[n])
//
// Routers: TopKRouter renormalises the k probabilities to sum to 1 (Mixtral, Jiang et al. 2024,
// arXiv:2401.04088); SwitchRouter weights one expert by its probability (Switch Transformer,
// Fedus et al. 2021, arXiv:2101.03961). Shared experts as in DeepSeekMoE (Dai et al. 2024,
// arXiv:2401.06066).
//
// Tokens are grouped by expert, not computed densely: the router's choices are copied to the host,
// which plans the grouping (a counting sort in token order: deterministic), and each expert runs
// on its own contiguous rows of one gathered buffer [N·k, C]. Every expert reuses the same
// activation memory at other rows (Ctx's row window), so the experts' activations together take
// what one dense feed-forward over N·k rows takes. Dropless by default; with moe_capacity = c > 0
// an expert takes at most ceil(c · N·k / E) tokens, the rest (in token order) are dropped: their
// slot adds nothing, the residual carries them.
//
// Auxiliary losses, added to the training loss by each MoE layer (their gradients are seeded here;
// the objective's loss stays the language-modelling loss, and metrics.jsonl gets both):
//   load balancing (Switch's form, as Transformers' Mixtral computes it):
//       moe_aux_coef · E · Σ_e f_e · P_e,  f_e = tokens routed to e / N,  P_e = mean_n probs[n, e]
//       (k for a perfectly balanced router; f_e is a count and has no gradient);
//   router z-loss (ST-MoE, Zoph et al. 2022, arXiv:2202.08906): moe_z_coef · mean_n lse_n².
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/memory.hpp"  // copy_bytes
#include "../core/type_name.hpp"
#include "common.hpp"
#include "linear.hpp"

namespace llmtk {

struct TopKRouter {
  static constexpr bool normalize = true;
  static constexpr int default_k = 2;
  static constexpr std::string_view tags[] = {"topk_router"};
};
struct SwitchRouter {
  static constexpr bool normalize = false;
  static constexpr int default_k = 1;
  static constexpr std::string_view tags[] = {"switch_router"};
};
template <class R>
concept Router = requires {
  { R::normalize } -> std::convertible_to<bool>;
  { R::default_k } -> std::convertible_to<int>;
};

namespace rules {
LLMTK_DIMS_RULE(moe_top_k_within_experts, "model.moe_top_k, model.moe_experts",
                "moe_top_k must be at most moe_experts (each token goes to k different experts)",
                d.get("moe_top_k") >= 1 && d.get("moe_top_k") <= d.get("moe_experts"));
}  // namespace rules

// Copies of one expert type, as the visitor sees them: `arch show` prints "8 x SwiGLU, top-2 per
// token" for the routed experts and "1 x SwiGLU, every token" for the shared ones.
template <class Expert, bool Shared>
struct ExpertList {
  static constexpr Role role = Role::other;
  using In = Hidden;
  using Out = Hidden;
  using Parts = PartList<Child<"N", Expert>>;
  static std::string note(const Dims& d) {
    const std::string each = std::string(type_name<Expert>());
    if (Shared) return std::to_string(d.get_int("moe_shared")) + " x " + each + ", every token";
    return std::to_string(d.get_int("moe_experts")) + " x " + each + ", top-" + std::to_string(d.get_int("moe_top_k")) +
           " per token";
  }
  static std::string child_note(std::string_view, const Dims&) { return Shared ? "each shared expert" : "each expert"; }
};

template <class Expert, class R = TopKRouter>
struct MoE;

template <FeedForward Expert, Router R>
struct MoE<Expert, R> {
  static constexpr Role role = Role::feedforward;
  static constexpr std::string_view tags[] = {"moe", R::tags[0]};  // and the router's: "topk_router"
  using In = Hidden;
  using Out = Hidden;
  using Rules = RuleList<rules::moe_top_k_within_experts>;
  using Parts = PartList<Child<"experts", ExpertList<Expert, false>>, Child<"shared", ExpertList<Expert, true>>>;
  // clang-format off
  static constexpr KeySpec keys[] = {
      {"moe_experts", KeyKind::integer, 8, 1, 4096, "experts per MoE layer"},
      {"moe_top_k", KeyKind::integer, double(R::default_k), 1, 64, "experts each token is sent to"},
      {"moe_shared", KeyKind::integer, 0, 0, 64, "shared experts every token goes through"},
      {"moe_capacity", KeyKind::real, 0, 0, 64, "capacity factor: 0 = dropless, else at most ceil(c*N*k/E) tokens per expert"},
      {"moe_aux_coef", KeyKind::real, 0.01, 0, 100, "load-balancing loss coefficient"},
      {"moe_z_coef", KeyKind::real, 0.001, 0, 100, "router z-loss coefficient"},
  };
  // clang-format on

  Linear router;                  // w_router: [E, C]
  std::vector<Expert> experts;    // experts.e.*: each on its own rows of xs / ys
  std::vector<Expert> shared;     // shared.s.*: every token
  ActSlot logits, dlogits;        // [N, E] (activation dtype)
  ActSlot probs, lse, gate, dgate, dprobs;  // f32: [N, E], [N], [N, k], [N, k], [E]
  ActSlot index, slot, token;     // i32: [N, k], [N, k], [N·k]
  ActSlot xs, ys, dxs, dys;       // tokens grouped by expert, and their outputs: [N·k, C]
  ActSlot part, shared_y;         // backward scratch [N, C]; shared experts' sum [N, C]

  // The grouping of the last forward (host): expert e holds rows offset[e] .. offset[e] + count[e].
  std::vector<std::int32_t> h_index, h_slot, h_token;
  std::vector<std::int64_t> offset, count, routed;
  std::vector<float> h_dprobs, h_probs, h_lse;

  static int n_experts(const Dims& d) { return d.get_int("moe_experts"); }
  static int top_k(const Dims& d) { return d.get_int("moe_top_k"); }

  void declare(Planner& p) {
    const std::int64_t C = p.dims.d_model, N = p.B * p.T, E = n_experts(p.dims), K = top_k(p.dims), M = N * K;
    router.declare(p, "w_router", "b_router", E, C, ParamKind::matrix, false);
    logits = p.act("router_logits", {N, E}), dlogits = p.act("drouter_logits", {N, E});
    probs = p.stat("router_probs", {N, E}), lse = p.stat("router_lse", {N});
    gate = p.stat("gate", {N, K}), dgate = p.stat("dgate", {N, K}), dprobs = p.stat("aux_dprobs", {E});
    index = p.act("route_index", {N, K}, DType::i32), slot = p.act("route_slot", {N, K}, DType::i32);
    token = p.act("route_token", {M}, DType::i32);
    xs = p.act("xs", {M, C}), ys = p.act("ys", {M, C}), dxs = p.act("dxs", {M, C}), dys = p.act("dys", {M, C});
    part = p.act("dx_part", {N, C});
    experts.assign(std::size_t(E), Expert{});
    {
      auto s = p.scope("experts");
      auto rows = p.rows(M, 1);  // each expert's activations are planned for all M rows ...
      const std::string first = p.prefix() + "0.";
      for (std::int64_t e = 0; e < E; ++e) {
        auto se = p.scope(std::to_string(e));
        auto share = p.share_activations_within(first, p.prefix(), e > 0);  // ... and shared by all
        experts[std::size_t(e)].declare(p);
      }
    }
    const int S = p.dims.get_int("moe_shared");
    shared.assign(std::size_t(S), Expert{});
    if (S > 0) {
      auto s = p.scope("shared");
      for (int i = 0; i < S; ++i) {
        auto si = p.scope(std::to_string(i));
        shared[std::size_t(i)].declare(p);
      }
      shared_y = p.act("shared_y", {N, C});
    }
  }

  // The context expert e runs in: its rows of the grouped buffers, as a batch of count[e] tokens.
  static Ctx rows_of(const Ctx& c, std::int64_t begin, std::int64_t n) {
    Ctx e = c;
    e.B = n, e.T = 1, e.row0 = begin, e.rows = n;
    return e;
  }

  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model, E = n_experts(c.dims), K = top_k(c.dims);
    const auto x2 = x.view({N, C}), y2 = y.view({N, C});
    router.forward(c, c.a(logits), x2);
    ops::moe_route_forward(c.a(probs), c.a(lse), c.a(index), c.a(gate), c.a(logits), R::normalize);
    group(c, N, E, K);
    const std::int64_t used = offset[std::size_t(E)];
    ops::moe_gather(c.a(xs).row_range(0, used), x2, c.a(token).span(0, used));
    for (std::int64_t e = 0; e < E; ++e) {
      const std::int64_t n = count[std::size_t(e)], o = offset[std::size_t(e)];
      if (n == 0) continue;
      Ctx ce = rows_of(c, o, n);
      experts[std::size_t(e)].forward(ce, c.a(ys).row_range(o, n), c.a(xs).row_range(o, n));
    }
    ops::moe_combine_forward(y2, c.a(ys), c.a(gate), c.a(slot));
    for (auto& s : shared) {
      s.forward(c, c.a(shared_y).view({c.B, c.T, C}), x);
      ops::add_forward(y2, y2, c.a(shared_y));
    }
    if (c.stats) report(c, N, E, K);
  }

  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model, E = n_experts(c.dims);
    const auto x2 = x.view({N, C}), dx2 = dx.view({N, C}), dy2 = dy.view({N, C});
    ops::moe_combine_backward(c.a(dys), c.a(dgate), dy2, c.a(ys), c.a(gate), c.a(slot));
    for (std::int64_t e = 0; e < E; ++e) {
      const std::int64_t n = count[std::size_t(e)], o = offset[std::size_t(e)];
      if (n == 0) continue;
      Ctx ce = rows_of(c, o, n);
      experts[std::size_t(e)].backward(ce, c.a(dxs).row_range(o, n), c.a(dys).row_range(o, n),
                                       c.a(xs).row_range(o, n));
    }
    ops::moe_combine_forward(dx2, c.a(dxs), TensorRef{}, c.a(slot));  // the gather's backward
    const double z_coef = c.dims.get("moe_z_coef");
    ops::moe_route_backward(c.a(dlogits), c.a(dgate), c.a(dprobs), c.a(probs), c.a(lse), c.a(index), c.a(gate),
                            float(2.0 * z_coef / double(N)), R::normalize);
    router.backward(c, c.a(part), c.a(dlogits), x2);
    ops::add_forward(dx2, dx2, c.a(part));
    for (auto& s : shared) {
      s.backward(c, c.a(part).view({c.B, c.T, C}), dy, x);
      ops::add_forward(dx2, dx2, c.a(part));
    }
  }

  static double flops_per_token(const Dims& d, std::int64_t T) {
    const double C = d.d_model, E = d.get("moe_experts"), K = d.get("moe_top_k"), S = d.get("moe_shared");
    return 2.0 * C * E + (K + S) * Expert::flops_per_token(d, T);  // the router, and the experts a token visits
  }
  // Experts a token's forward does not read (AnyModel::active_param_count).
  static std::int64_t inactive_experts(const Dims& d) { return d.get_int("moe_experts") - d.get_int("moe_top_k"); }

 private:
  // The grouping: expert e's tokens in token order at rows offset[e] ..; slot[n, j] is the row of
  // token n's j-th choice, or −1 when the expert was full.
  void group(Ctx& c, std::int64_t N, std::int64_t E, std::int64_t K) {
    h_index.resize(std::size_t(N * K)), h_slot.resize(std::size_t(N * K)), h_token.resize(std::size_t(N * K));
    copy_bytes(h_index.data(), Device::host, c.a(index).data, c.a(index).device, h_index.size() * sizeof(std::int32_t));
    routed.assign(std::size_t(E), 0), count.assign(std::size_t(E), 0), offset.assign(std::size_t(E + 1), 0);
    for (auto e : h_index) ++routed[std::size_t(e)];
    const double factor = c.dims.get("moe_capacity");
    const std::int64_t cap = factor > 0 ? std::int64_t(std::ceil(factor * double(N * K) / double(E))) : N;
    for (std::int64_t e = 0; e < E; ++e)
      offset[std::size_t(e + 1)] = offset[std::size_t(e)] + std::min(routed[std::size_t(e)], cap);
    for (std::int64_t i = 0; i < N * K; ++i) {
      const auto e = std::size_t(h_index[std::size_t(i)]);
      if (count[e] < cap) {
        const std::int64_t m = offset[e] + count[e]++;
        h_slot[std::size_t(i)] = std::int32_t(m), h_token[std::size_t(m)] = std::int32_t(i / K);
      } else {
        h_slot[std::size_t(i)] = -1;
      }
    }
    copy_bytes(c.a(slot).data, c.a(slot).device, h_slot.data(), Device::host, h_slot.size() * sizeof(std::int32_t));
    copy_bytes(c.a(token).data, c.a(token).device, h_token.data(), Device::host,
               std::size_t(offset[std::size_t(E)]) * sizeof(std::int32_t));
    // The load-balancing loss's gradient: d/dprobs[n, e] of aux · E · Σ_e f_e · mean_n probs = aux · E · f_e / N.
    const double aux = c.dims.get("moe_aux_coef");
    h_dprobs.resize(std::size_t(E));
    for (std::int64_t e = 0; e < E; ++e)
      h_dprobs[std::size_t(e)] = float(aux * double(E) * double(routed[std::size_t(e)]) / double(N) / double(N));
    copy_bytes(c.a(dprobs).data, c.a(dprobs).device, h_dprobs.data(), Device::host, h_dprobs.size() * sizeof(float));
  }
  // The router's statistics for metrics.jsonl: each a mean over the model's MoE layers.
  void report(Ctx& c, std::int64_t N, std::int64_t E, std::int64_t K) {
    h_probs.resize(std::size_t(N * E)), h_lse.resize(std::size_t(N));
    copy_bytes(h_probs.data(), Device::host, c.a(probs).data, c.a(probs).device, h_probs.size() * sizeof(float));
    copy_bytes(h_lse.data(), Device::host, c.a(lse).data, c.a(lse).device, h_lse.size() * sizeof(float));
    double balance = 0, z = 0, load_max = 0;
    std::vector<double> load(static_cast<std::size_t>(E));
    for (std::int64_t e = 0; e < E; ++e) {
      double P = 0;
      for (std::int64_t n = 0; n < N; ++n) P += h_probs[std::size_t(n * E + e)];
      balance += double(routed[std::size_t(e)]) / double(N) * P / double(N);
      load[std::size_t(e)] = double(routed[std::size_t(e)]) * double(E) / double(N * K);
      load_max = std::max(load_max, load[std::size_t(e)]);
    }
    for (float l : h_lse) z += double(l) * l;
    // In this order: the trainer's progress line shows the first two.
    c.stats->add("moe_aux", double(E) * balance);
    c.stats->add("moe_load_max", load_max);
    // The share of tokens that visit the busiest expert (K / E when balanced, 1 when every token does).
    if (c.probe) c.probe->value("router_top_share", load_max * double(K) / double(E));
    c.stats->add("moe_z", z / double(N));
    c.stats->add("moe_dropped", double(N * K - offset[std::size_t(E)]) / double(N * K));
    if (E <= 16)
      for (std::int64_t e = 0; e < E; ++e) c.stats->add("moe_load_" + std::to_string(e), load[std::size_t(e)]);
  }
};

// Otherwise: the static_asserts name what the slots need.
template <class Expert, class R>
struct MoE : Rejected<Role::feedforward> {
  static_assert(FeedForward<Expert>, "MoE<Expert, Router>: the expert must be a feed-forward (SwiGLU, GeGLU, "
                                     "MLP<...>); the notes below name the type it got");
  static_assert(Router<R>, "MoE<Expert, Router>: the router must be TopKRouter or SwitchRouter (a type with "
                           "normalize and default_k); the notes below name the type it got");
};

}  // namespace llmtk
