#include "internals.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "../core/communicator.hpp"
#include "../core/error.hpp"
#include "../core/memory.hpp"
#include "../ops/ops.hpp"

namespace llmtk::train {

std::string layer_of(std::string_view param) {
  // "…blocks.N." → up to N; otherwise the first name.
  for (std::size_t at = param.find("blocks."); at != std::string_view::npos; at = param.find("blocks.", at + 1)) {
    if (at > 0 && param[at - 1] != '.') continue;
    std::size_t end = at + 7;
    while (end < param.size() && std::isdigit(static_cast<unsigned char>(param[end]))) ++end;
    if (end > at + 7) return std::string(param.substr(0, end));
  }
  return std::string(param.substr(0, param.find('.')));
}

void Internals::begin(AnyModel& model) {
  const Arena& params = std::as_const(model).params();
  if (!before_.allocated()) {
    for (const auto& e : params.entries()) {
      if (e.frozen) continue;
      before_.add(e.name, e.shape);
      for (const char* what : {"w", "g", "u"}) sums_.add(std::string(what) + ":" + e.name, {1});
    }
    before_.allocate(memory_of(params.device()));
    sums_.allocate(memory_of(params.device()));
  }
  sums_.zero();
  int j = 0;
  for (const auto& e : params.entries())
    if (!e.frozen) ops::convert(before_[j++], params[e.name]);
  layers_.clear();
  current_ = -1;
  model.set_probe(this);
}

void Internals::gradients(AnyModel& model, const std::vector<double>* squares) {
  model.set_probe(nullptr);  // the step's forward passes are over
  const Arena& params = std::as_const(model).params();
  int j = 0;
  for (const auto& e : params.entries()) {
    if (e.frozen) continue;
    if (squares) {
      const float g2 = float((*squares)[std::size_t(e.grad)]);
      sums_.write(3 * j++ + 1, &g2);
    } else {
      ops::sum_squares(sums_[3 * j++ + 1], model.grads()[e.grad]);
    }
  }
}

std::string Internals::end(AnyModel& model, std::int64_t step) {
  model.set_probe(nullptr);
  const Arena& params = std::as_const(model).params();
  int j = 0;
  for (const auto& e : params.entries()) {
    if (e.frozen) continue;
    const TensorRef w = params[e.name], d = before_[j];
    ops::sum_squares(sums_[3 * j], w);
    ops::scale_forward(d, d, -1.0f);  // d = w_after − w_before
    ops::add_forward(d, d, w);
    ops::sum_squares(sums_[3 * j + 2], d);
    ++j;
  }
  const Arena sums = sums_.host_copy();  // one copy back for every number
  std::vector<double> sq(std::size_t(3 * j));
  for (std::size_t k = 0; k < sq.size(); ++k) sq[k] = sums[int(k)].f32()[0];
  if (Communicator* tp = model.tensor_parallel()) gather_shares(model, *tp, sq);
  // Per parameter, then per layer (the norms of its parameters together: √Σ).
  nlohmann::json per_param = nlohmann::json::object();
  std::vector<std::string> order;
  std::map<std::string, std::array<double, 3>> squares;
  j = 0;
  for (const auto& e : params.entries()) {
    if (e.frozen) continue;
    const double w2 = sq[std::size_t(3 * j)], g2 = sq[std::size_t(3 * j + 1)], u2 = sq[std::size_t(3 * j + 2)];
    ++j;
    const double w = std::sqrt(w2);
    per_param[e.name] = {std::sqrt(g2), w, w > 0 ? std::sqrt(u2) / w : 0.0};
    const std::string layer = layer_of(e.name);
    auto [it, added] = squares.try_emplace(layer, std::array<double, 3>{0, 0, 0});
    if (added) order.push_back(layer);
    it->second[0] += g2, it->second[1] += w2, it->second[2] += u2;
  }
  // Layers with activations but no trainable parameter (frozen under LoRA) still get a row.
  for (const auto& l : layers_)
    if (std::find(order.begin(), order.end(), l.name) == order.end()) order.push_back(l.name);
  std::stable_sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
    // The model's order: the embedding, the stacks' layers, then the rest (final norm, head).
    auto rank = [](const std::string& s) { return s == "embed" ? 0 : s.find("blocks.") != std::string::npos ? 1 : 2; };
    return rank(a) < rank(b);
  });
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& name : order) {
    nlohmann::json l = {{"name", name}};
    if (auto it = squares.find(name); it != squares.end()) {
      const auto& [g2, w2, u2] = it->second;
      l["grad_norm"] = std::sqrt(g2), l["weight_norm"] = std::sqrt(w2);
      l["update_ratio"] = w2 > 0 ? std::sqrt(u2 / w2) : 0.0;
    }
    for (const auto& p : layers_) {
      if (p.name != name) continue;
      for (const auto& [k, v] : p.values) l[k] = v;
      if (!p.entropy.empty()) l["attn_entropy"] = p.entropy;
    }
    layers.push_back(std::move(l));
  }
  // Non-finite numbers (a diverging run) are written as null: JSON has no NaN.
  return nlohmann::json{{"step", step}, {"layers", std::move(layers)}, {"params", std::move(per_param)}}.dump();
}

// Tensor parallel: each rank measured its shares. A split parameter's sums of squares add over
// the ranks (a whole one, the same on every rank, is counted once); a layer's dead share of units
// is the mean of the ranks' (their shares of the units are equal); the heads' entropies are
// concatenated in the ranks' order (rank r holds heads r·H/P ..). One collective of doubles, so
// that every rank ends with one process's record.
void Internals::gather_shares(const AnyModel& model, Communicator& tp, std::vector<double>& squares) {
  const int P = tp.size(), me = tp.rank();
  std::vector<double> v;
  std::size_t k = 0;
  for (const auto& e : model.params().entries()) {
    if (e.frozen) continue;
    const bool counted = model.split_dim(model.params().find(e.name)) >= 0 || me == 0;
    for (int q = 0; q < 3; ++q, ++k) v.push_back(counted ? squares[k] : 0.0);
  }
  for (const auto& l : layers_) {
    if (const auto it = l.values.find("dead"); it != l.values.end()) v.push_back(it->second / P);
    for (int r = 0; r < P; ++r)
      for (const double h : l.entropy) v.push_back(r == me ? h : 0.0);
  }
  tp.all_reduce_sum(v.data(), std::int64_t(v.size()), "the training internals' shares (tensor parallel)");
  std::copy(v.begin(), v.begin() + std::ptrdiff_t(squares.size()), squares.begin());
  std::size_t at = squares.size();
  for (auto& l : layers_) {
    if (const auto it = l.values.find("dead"); it != l.values.end()) it->second = v[at++];
    const std::size_t H = l.entropy.size() * std::size_t(P);
    l.entropy.assign(v.begin() + std::ptrdiff_t(at), v.begin() + std::ptrdiff_t(at + H));
    at += H;
  }
}

const std::vector<double>* InternalsHistory::row(const std::string& quantity, std::size_t layer) const {
  const auto it = values.find(quantity);
  return it == values.end() || layer >= it->second.size() ? nullptr : &it->second[layer];
}

InternalsHistory read_internals(const std::string& run_dir) {
  InternalsHistory h;
  const std::string path = (std::filesystem::path(run_dir) / "internals.jsonl").string();
  std::ifstream in(path);
  if (!in) return h;
  std::vector<nlohmann::json> records;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() && in.peek() == std::char_traits<char>::eof()) continue;  // a torn last line (a crash mid-write)
    LLMTK_CHECK(j.is_object() && j.contains("step") && j["step"].is_number() && j.contains("layers") && j["layers"].is_array(),
                path + ":" + std::to_string(lineno), "not an internals record (a JSON object with \"step\" and \"layers\")");
    records.push_back(std::move(j));
  }
  auto index = [&](const std::string& name) {
    const auto it = std::find(h.layers.begin(), h.layers.end(), name);
    if (it != h.layers.end()) return std::size_t(it - h.layers.begin());
    h.layers.push_back(name);
    return h.layers.size() - 1;
  };
  for (const auto& r : records)
    for (const auto& l : r["layers"])
      if (l.is_object() && l.contains("name") && l["name"].is_string()) index(l["name"].get<std::string>());
  const std::size_t L = h.layers.size(), R = records.size();
  for (std::size_t k = 0; k < R; ++k) {
    h.steps.push_back(records[k]["step"].get<double>());
    for (const auto& l : records[k]["layers"]) {
      if (!l.is_object() || !l.contains("name") || !l["name"].is_string()) continue;
      const std::size_t at = index(l["name"].get<std::string>());
      for (const auto& [key, v] : l.items()) {
        double x = NAN;
        if (v.is_number()) x = v.get<double>();
        else if (key == "attn_entropy" && v.is_array() && !v.empty()) {
          x = 0;
          for (const auto& e : v) x += e.is_number() ? e.get<double>() : NAN;
          x /= double(v.size());
          if (k + 1 == R) {
            h.last_entropy.resize(L);
            for (const auto& e : v) h.last_entropy[at].push_back(e.is_number() ? e.get<double>() : NAN);
          }
        } else if (!v.is_null()) {
          continue;  // the name, or something this reader does not chart
        }
        auto& table = h.values[key];
        if (table.empty()) table.assign(L, std::vector<double>(R, NAN));
        table[at][k] = x;
      }
    }
  }
  return h;
}

Internals::Layer* Internals::current() { return current_ >= 0 ? &layers_[std::size_t(current_)] : nullptr; }

void Internals::enter(std::string name) {
  // A later forward pass of the same step (gradient accumulation) meets the layers again: only the
  // first pass is measured.
  for (const auto& l : layers_)
    if (l.name == name) return void(current_ = -1);
  layers_.push_back({std::move(name), {}, {}});
  current_ = int(layers_.size()) - 1;
}

std::vector<float>& Internals::host(TensorRef t) {
  host_.resize(std::size_t(t.numel()));
  if (t.dtype == DType::f32) {
    copy_bytes(host_.data(), Device::host, t.data, t.device, t.bytes());
  } else {  // bf16 activations: widened exactly
    std::vector<bf16> b(std::size_t(t.numel()));
    copy_bytes(b.data(), Device::host, t.data, t.device, t.bytes());
    for (std::size_t i = 0; i < b.size(); ++i) host_[i] = float(b[i]);
  }
  return host_;
}

void Internals::block_output(TensorRef y) {
  Layer* l = current();
  if (!l) return;
  const auto& x = host(y);
  double sum = 0, sq = 0, mx = 0;
  for (float v : x) sum += v, sq += double(v) * v, mx = std::max(mx, double(std::fabs(v)));
  const double n = double(x.size()), mean = sum / n;
  l->values["act_mean"] = mean;
  l->values["act_std"] = std::sqrt(std::max(0.0, sq / n - mean * mean));
  l->values["act_max"] = mx;
  current_ = -1;  // the layer is measured; what runs until the next enter() is not its own
}

void Internals::units(TensorRef a) {
  Layer* l = current();
  if (!l) return;
  const auto& x = host(a);
  const std::int64_t F = a.size(-1), N = a.rows();
  std::int64_t dead = 0;
  for (std::int64_t f = 0; f < F; ++f) {
    bool alive = false;
    for (std::int64_t n = 0; n < N && !alive; ++n) alive = std::fabs(x[std::size_t(n * F + f)]) >= 1e-3f;
    dead += !alive;
  }
  l->values["dead"] = double(dead) / double(F);
}

// The entropy of a query's attention p_j = exp(s_j − lse) over its keys is
//   H = −Σ p_j log p_j = lse − Σ p_j s_j,   and, with s_j = q·k_j / √D,   Σ p_j s_j = q·(Σ p_j k_j) / √D.
// Σ p_j k_j is what attention returns when the keys are also the values: one more attention pass
// on the backend with the same mask (padding, documents, windows) gives every head's entropy
// without writing the scores out.
void Internals::attention(TensorRef q, TensorRef k, TensorRef lse, const AttentionMask& mask) {
  Layer* l = current();
  if (!l) return;
  const std::int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3);
  if (!scratch_.allocated() || scratch_[0].numel() != q.numel() || scratch_[0].dtype != q.dtype) {
    scratch_ = Arena("internals.scratch");
    scratch_.add("pk", {B, T, H, D}, q.dtype);
    scratch_.add("lse", {B * H * T});
    scratch_.allocate(memory_of(q.device));
  }
  const TensorRef pk = scratch_[0].view({B, T, H, D});
  ops::attention_forward(pk, scratch_[1], q, k, k, mask);
  host2_ = host(q);
  host3_ = host(pk);
  std::vector<float> s(std::size_t(B * H * T));
  copy_bytes(s.data(), Device::host, lse.data, lse.device, s.size() * sizeof(float));
  lengths_.assign(std::size_t(B), std::int32_t(T));
  if (mask.lengths) copy_bytes(lengths_.data(), Device::host, mask.lengths.data, mask.lengths.device, std::size_t(B) * 4);
  const double scale = 1.0 / std::sqrt(double(D));
  l->entropy.assign(std::size_t(H), 0.0);
  std::vector<double> count(std::size_t(H), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < std::min<std::int64_t>(T, lengths_[std::size_t(b)]); ++t)
      for (std::int64_t h = 0; h < H; ++h) {
        const std::size_t at = std::size_t(((b * T + t) * H + h) * D);
        double dot = 0;
        for (std::int64_t d = 0; d < D; ++d) dot += double(host2_[at + std::size_t(d)]) * host3_[at + std::size_t(d)];
        l->entropy[std::size_t(h)] += double(s[std::size_t((b * H + h) * T + t)]) - dot * scale;
        count[std::size_t(h)] += 1;
      }
  for (std::int64_t h = 0; h < H; ++h) l->entropy[std::size_t(h)] /= std::max(1.0, count[std::size_t(h)]);
}

void Internals::value(std::string_view name, double v) {
  if (Layer* l = current()) l->values[std::string(name)] = v;
}

}  // namespace llmtk::train
