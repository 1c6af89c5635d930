// LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): beside a frozen
// linear map y = x·Wᵀ (W: [out, in]), a trainable update of rank r,
//
//   y = x·Wᵀ + s · (dropout(x)·Aᵀ)·Bᵀ,     A: [r, in], B: [out, r],   s = alpha / r
//
// (s = alpha / √r with rsLoRA, Kalajdzievski 2023, which keeps the update's scale as r grows).
// B starts at zero, so training starts from the base model exactly; A starts Kaiming-uniform, as
// PEFT does. The update runs as its own two thin products, never by forming W + s·B·A (which
// would cost a full [out, in] matrix per step); merging is for export (train/finetune.hpp).
//
// Linear calls it through the LinearAdapter seam (protocol/plan.hpp); its parameters are
// `<weight>_adapter.lora_A` and `<weight>_adapter.lora_B`, e.g. blocks.0.attn.wq_adapter.lora_A.
#pragma once
#include "common.hpp"

namespace llmtk {

class LoRA final : public LinearAdapter {
 public:
  // dropout: the probability of zeroing each input element on the adapter's path in training
  // (PEFT's lora_dropout: B·A·dropout(x); the frozen product sees x whole).
  LoRA(std::int64_t out, std::int64_t in, std::int64_t rank, float scale, float dropout = 0)
      : out_(out), in_(in), rank_(rank), scale_(scale), dropout_(dropout) {}

  void declare(Planner& p) override {
    const std::int64_t N = p.B * p.T;
    // Each adapter draws its own masks: the step's seed mixed with a hash of its name (FNV-1a).
    salt_ = 0xcbf29ce484222325ull;
    for (unsigned char ch : p.prefix()) salt_ = (salt_ ^ ch) * 0x100000001b3ull;
    if (dropout_ > 0) xd_ = p.act("x_dropped", {N, in_});
    a_ = p.param("lora_A", {rank_, in_}, ParamKind::lora_a);
    b_ = p.param("lora_B", {out_, rank_}, ParamKind::lora_b);
    h_ = p.act("h", {N, rank_});     // s · x·Aᵀ, saved for backward
    u_ = p.act("u", {N, out_});      // h·Bᵀ, added to y
    dh_ = p.act("dh", {N, rank_});   // backward scratch
    dx_ = p.act("dx", {N, in_});
  }

  // y += s · (x·Aᵀ)·Bᵀ; x: [N, in], y: [N, out]
  void forward(Ctx& c, TensorRef y, TensorRef x) override {
    const TensorRef h = c.a(h_);
    ops::matmul_forward(h, input(c, x), c.p(a_), {});
    ops::scale_forward(h, h, scale_);
    ops::matmul_forward(c.a(u_), h, c.p(b_), {});
    const TensorRef y2 = flat(y, out_);
    ops::add_forward(y2, y2, c.a(u_));
  }

  // With h = s·x·Aᵀ: dB += dyᵀ·h; dh = dy·B; dA += (s·dh)ᵀ·x; dx += (s·dh)·A.
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) override {
    const TensorRef dh = c.a(dh_);
    ops::matmul_backward(dh, c.g(b_), {}, flat(dy, out_), c.a(h_), c.p(b_));
    ops::scale_forward(dh, dh, scale_);
    ops::matmul_backward(dx ? c.a(dx_) : TensorRef{}, c.g(a_), {}, dh, dropping(c) ? c.a(xd_) : flat(x, in_), c.p(a_));
    if (dx) {
      // Through the mask: the same seed draws the same elements (ops/dropout_mask.hpp).
      if (dropping(c)) ops::dropout(c.a(dx_), c.a(dx_), dropout_, c.dropout_seed ^ salt_);
      const TensorRef dx2 = flat(dx, in_);
      ops::add_forward(dx2, dx2, c.a(dx_));
    }
  }

  std::int64_t rank() const { return rank_; }
  float scale() const { return scale_; }

 private:
  bool dropping(const Ctx& c) const { return dropout_ > 0 && c.dropout_seed != 0; }
  // What A reads: x, or in training with dropout x with elements zeroed (kept ones scaled).
  TensorRef input(Ctx& c, TensorRef x) {
    if (!dropping(c)) return flat(x, in_);
    ops::dropout(c.a(xd_), flat(x, in_), dropout_, c.dropout_seed ^ salt_);
    return c.a(xd_);
  }
  // [..., width] as [N, width]: Linear hands over [B·T, width] or [B, T, width].
  static TensorRef flat(TensorRef t, std::int64_t width) { return t.view({t.numel() / width, width}); }

  std::int64_t out_, in_, rank_;
  float scale_, dropout_;
  std::uint64_t salt_ = 0;
  ParamSlot a_, b_;
  ActSlot h_, u_, dh_, dx_, xd_;
};

}  // namespace llmtk
