// Linear: y[N, O] = x[N, I] · wᵀ + b, the one place a weight matrix lives. Every part with a
// matmul holds Linears (attention's q, k, v and o; the feed-forwards; the LM head), so what the
// later stages of training need from a linear map has one home:
//   - frozen: a parameter matching the model's freeze patterns has no gradient; backward then
//     skips dw and db and still writes dx;
//   - adapter: an optional part beside the map (LoRA and its kin) that adds to y and dx and owns
//     its own parameters, created by the planner's adapter factory at declare time;
//   - working copy: in bf16 (docs/bf16.md) the matmul reads a bf16 copy of the weight that the
//     model refreshes once per optimizer step; weight(c) returns it, dweight(c) the f32 gradient;
//   - split: how tensor parallel divides the map among ranks (docs/distributed.md): by output
//     rows (Megatron's column-parallel: each rank computes some of y's columns, its bias rows
//     with them) or by input columns (row-parallel: each rank a partial sum of all of y; the
//     part sums them over the ranks, and only rank 0 adds the bias, which every rank keeps whole).
// Parameter names and layouts are the caller's (docs/engine.md): weight [O, I] row-major, bias [O].
#pragma once
#include <memory>
#include <string_view>

#include "common.hpp"  // ops::matmul_forward, ops::matmul_backward

namespace llmtk {

// How a tensor-parallel run splits a weight over ranks: by output rows (column-parallel in
// Megatron's terms) or by input columns (row-parallel).
enum class LinearSplit { none, rows, columns };

struct Linear {
  ParamSlot w, b;  // w: [out, in]; b: [out] or absent
  LinearSplit split = LinearSplit::none;
  std::shared_ptr<LinearAdapter> adapter;  // null: none

  // Declares the weight `weight_name` [out, in] and, when `with_bias`, the bias `bias_name` [out].
  void declare(Planner& p, std::string_view weight_name, std::string_view bias_name, std::int64_t out_features,
               std::int64_t in_features, ParamKind kind, bool with_bias, LinearSplit how = LinearSplit::none) {
    w = p.param(weight_name, {out_features, in_features}, kind);
    if (with_bias) b = p.param(bias_name, {out_features}, ParamKind::bias);
    p.read_by_matmul(w);
    split = how;
    if (how == LinearSplit::rows) p.split(w, 0), p.split(b, 0);
    if (how == LinearSplit::columns) p.split(w, 1);
    adapter = p.adapter_for(weight_name, out_features, in_features);
  }

  TensorRef weight(const Ctx& c) const { return c.w(w); }  // the bf16 working copy in bf16
  // What the forward adds: a row-parallel map's bias on one rank only (the ranks' sum adds it once).
  TensorRef bias(const Ctx& c) const { return split == LinearSplit::columns && c.tp_rank != 0 ? TensorRef{} : c.p(b); }
  TensorRef dweight(const Ctx& c) const { return c.g(w); }  // null when frozen
  TensorRef dbias(const Ctx& c) const { return c.g(b); }

  // y: [N, out] written; x: [N, in]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    ops::matmul_forward(y, x, weight(c), bias(c));
    if (adapter) adapter->forward(c, y, x);
  }
  // dx: [N, in] written (may be null when nobody needs it); dw, db += unless frozen
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    ops::matmul_backward(dx, dweight(c), dbias(c), dy, x, weight(c));
    if (adapter) adapter->backward(c, dx, dy, x);
  }
  static double flops_per_row(std::int64_t out_features, std::int64_t in_features) {
    return 2.0 * double(out_features) * double(in_features);
  }
};

}  // namespace llmtk
