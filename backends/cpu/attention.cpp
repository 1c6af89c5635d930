// attention_forward / attention_backward: tiled attention, FlashAttention-2's schedule on a CPU.
//
// Queries and keys are cut into tiles of kBQ × kBK rows. A tile's scores S = Q·Kᵀ live in a
// 64 × 64 buffer, never the T × T matrix: memory is a few tiles per thread, whatever T is.
//   forward:  for each (batch, head, query tile), walk the key tiles the mask leaves visible
//             (causal tiles above the diagonal and tiles outside the window are skipped), keep a
//             running row max m and sum l (online softmax) and rescale the output accumulator
//             when m grows; out = O / l, lse = m + log l.
//   backward: for each (batch, kv head), walk the key tiles; for every query head of the group
//             and every query tile that sees the key tile, recompute P = exp(S − lse) and
//             accumulate dV += Pᵀ·dO, dS = P ∘ (dO·Vᵀ − δ), dQ += dS·K, dK += dSᵀ·Q, with
//             δ_i = dO_i · out_i. One thread owns a kv head's dK, dV and its query heads' dQ, so
//             nothing is shared and the result does not depend on scheduling.
// GQA reads the kv head h / (H / KV) directly: K and V are never repeated per query head.
//
// The forward keeps the key tiles a thread has loaded for its batch row and kv head (up to 4,096
// keys) while it walks that head's query tiles and the other heads of its GQA group.
//
// Tiles are copied into per-thread buffers whose rows are padded with zeros to a multiple of 16
// floats (one AVX-512 register), K and V also transposed, so the three small products below run
// on whole registers with the accumulators held in registers. The padding adds zeros to dot
// products, so results are exact for any head size D ≤ 256.
//
// bf16 activations (docs/bf16.md): on a CPU with AVX512_BF16 the products run on tiles of bf16
// pairs ("bf16 pairs" below); elsewhere q, k, v, dout and out are widened as they are copied into
// the f32 tiles. out, dk and dv are rounded as they are stored, and dq sums over key tiles in f32
// rows of the thread's buffer before one rounding: no separate conversion pass.
#include <omp.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // AVX512_BF16's vdpbf16ps, for the bf16 pairs
#endif

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "elementwise.hpp"  // by_dtype, ld, st: bf16 activations
#include "fast_math.hpp"

namespace llmtk::cpu {

using namespace elementwise;

namespace {

constexpr int kVec = 16;  // floats per vector register
constexpr int kBQ = 64;   // query rows per tile
constexpr int kBK = 64;   // key rows per tile: a multiple of kVec
constexpr int kMaxD = 256;
using vf = float __attribute__((vector_size(kVec * sizeof(float))));  // GCC/Clang vector type

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

using Shape = backend::AttentionShape;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// S[r][0:kBK] = Σ_d A[r][d] · Bt[d][0:kBK] for r < rows (a multiple of 4). A: rows × Dp,
// Bt: Dp × kBK. (S = Q·Kᵀ with Bt = Kᵀ; dP = dO·Vᵀ with Bt = Vᵀ.)
void product_abt(float* S, const float* A, const float* Bt, int rows, int Dp) {
  constexpr int NV = kBK / kVec;
  for (int r0 = 0; r0 < rows; r0 += 4) {
    vf acc[4][NV] = {};
    for (int d = 0; d < Dp; ++d) {
      vf b[NV];
      for (int c = 0; c < NV; ++c) b[c] = load(Bt + d * kBK + c * kVec);
      for (int r = 0; r < 4; ++r) {
        const float a = A[(r0 + r) * Dp + d];
        for (int c = 0; c < NV; ++c) acc[r][c] += a * b[c];
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < NV; ++c) store(S + (r0 + r) * kBK + c * kVec, acc[r][c]);
  }
}

// C[r][0:Dp] += Σ_t M[r·rs + t·ts] · V[t][0:Dp] for r < nr, t < nt; Dp = NV · kVec, nr a
// multiple of R. With (rs, ts) = (kBK, 1): C += M·V (out += P·V, dQ += dS·K); with (1, kBK):
// C += Mᵀ·V (dV += Pᵀ·dO, dK += dSᵀ·Q).
template <int NV>
void accumulate_rows(float* C, const float* M, int rs, int ts, int nr, int nt, const float* V) {
  constexpr int R = NV > 8 ? 1 : NV > 4 ? 2 : 4;  // R·NV accumulators stay within 16 registers
  constexpr int Dp = NV * kVec;
  for (int r0 = 0; r0 < nr; r0 += R) {
    vf acc[R][NV];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < NV; ++c) acc[r][c] = load(C + (r0 + r) * Dp + c * kVec);
    for (int t = 0; t < nt; ++t) {
      vf v[NV];
      for (int c = 0; c < NV; ++c) v[c] = load(V + t * Dp + c * kVec);
      for (int r = 0; r < R; ++r) {
        const float m = M[(r0 + r) * rs + t * ts];
        for (int c = 0; c < NV; ++c) acc[r][c] += m * v[c];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < NV; ++c) store(C + (r0 + r) * Dp + c * kVec, acc[r][c]);
  }
}

using AccumulateFn = void (*)(float*, const float*, int, int, int, int, const float*);

// kernel<NV> for NV = Dp / kVec, 1 … 16 (head dims up to 256): a table built once from `make`,
// which returns the instance for its std::integral_constant argument.
template <class Fn, class Make>
Fn for_width(int Dp, Make make) {
  static const auto table = [&]<std::size_t... I>(std::index_sequence<I...>) {
    return std::array<Fn, 16>{make(std::integral_constant<int, int(I) + 1>{})...};
  }(std::make_index_sequence<16>{});
  return table[std::size_t(std::clamp(Dp / kVec, 1, 16) - 1)];
}

AccumulateFn accumulate_for(int Dp) {
  return for_width<AccumulateFn>(Dp, [](auto nv) -> AccumulateFn { return &accumulate_rows<decltype(nv)::value>; });
}

// ---- bf16 pairs (AVX512_BF16) ---------------------------------------------------------------
// With bf16 activations on a CPU with AVX512_BF16, the products (two in the forward, five in the
// backward) run on bf16: vdpbf16ps multiplies 16 pairs of bf16 and adds each pair's two products
// to an f32 lane, twice the multiply-adds of an f32 FMA per instruction, accumulating in f32. Its
// operands are tiles of 32-bit words, each word a pair of bf16 next to each other along the
// product's reduction (the lower half the even element). In the forward:
//   S = Q·Kᵀ reduces over d: Q rows as they are (word p of a row = dims 2p, 2p + 1), and Kᵀ as a
//            tile of words [D/2][kBK] (word p of key row j at [p][j]);
//   O += P·V reduces over keys: P's rows rounded to bf16 pairs (keys 2t, 2t + 1), and V as words
//            [kBK/2][Dp] (word [t][d] = V[2t][d], V[2t + 1][d]).
// The backward builds the same kinds of tiles (attention_backward). P is rounded to bf16 before
// it meets V, as GPU flash attention kernels do; the row max, the sums and O stay f32.
// LLMTK_CPU_BF16_PAIRS=0 turns them off: the widening path that CPUs without AVX512_BF16 take
// (tests/CMakeLists.txt runs the bf16 op cases that way too, test_backends.bf16_widened).
bool pairs_allowed() {
  const char* e = std::getenv("LLMTK_CPU_BF16_PAIRS");
  return !(e && std::string_view(e) == "0");
}
#if defined(__x86_64__) && defined(__GNUC__)
#define LLMTK_PAIRS_TARGET __attribute__((target("avx512f,avx512bf16")))
bool has_bf16_pairs() {
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return cpu && pairs_allowed();
}
#else
#define LLMTK_PAIRS_TARGET
bool has_bf16_pairs() { return false; }
#endif

// Q rows as words: tile[r][0:W] = words of row r (W = Dp / 2), zeros elsewhere.
void pair_rows(std::uint32_t* tile, const std::uint16_t* src, std::int64_t stride, int rows, int rows_padded, int D,
               int W) {
  std::memset(tile, 0, sizeof(std::uint32_t) * std::size_t(rows_padded) * std::size_t(W));
  for (int r = 0; r < rows; ++r) std::memcpy(tile + r * W, src + r * stride, sizeof(std::uint16_t) * std::size_t(D));
}
// Kᵀ as words: tile[p][j] = word p of key row j, a W × kBK tile, zeros elsewhere.
void pair_columns(std::uint32_t* tile, const std::uint16_t* src, std::int64_t stride, int keys, int D, int W) {
  std::memset(tile, 0, sizeof(std::uint32_t) * std::size_t(W) * kBK);
  for (int j = 0; j < keys; ++j) {
    std::uint32_t row[kMaxD / 2];
    std::memcpy(row, src + j * stride, sizeof(std::uint16_t) * std::size_t(D));
    for (int p = 0; p < D / 2; ++p) tile[p * kBK + j] = row[p];
  }
}
// V as words: tile[t][d] = V[2t][d] | V[2t + 1][d] << 16, a (kBK / 2) × Dp tile, zeros elsewhere.
void pair_keys(std::uint32_t* tile, const std::uint16_t* src, std::int64_t stride, int keys, int D, int Dp) {
  std::memset(tile, 0, sizeof(std::uint32_t) * std::size_t(kBK / 2) * std::size_t(Dp));
  for (int j = 0; j < keys; ++j) {
    const std::uint16_t* row = src + j * stride;
    std::uint32_t* out = tile + (j / 2) * Dp;
    const int shift = 16 * (j % 2);
    for (int d = 0; d < D; ++d) out[d] |= std::uint32_t(row[d]) << shift;
  }
}
// P's rows as bf16 pairs of keys: words[r][t] = bf16(P[r][2t]) | bf16(P[r][2t + 1]) << 16.
void round_pairs(std::uint32_t* words, const float* P, int rows) {
  for (int r = 0; r < rows; ++r)
#pragma omp simd
    for (int t = 0; t < kBK / 2; ++t)
      words[r * (kBK / 2) + t] =
          std::uint32_t(bf16_bits(P[r * kBK + 2 * t])) | std::uint32_t(bf16_bits(P[r * kBK + 2 * t + 1])) << 16;
}

// The transpose as pairs of rows: words[j][u] = bf16(M[2u][j]) | bf16(M[2u + 1][j]) << 16 for
// j < kBK, u < kBQ / 2 (Pᵀ and dSᵀ in the backward; rows at and past `rows` give zeros).
void round_column_pairs(std::uint32_t* words, const float* M, int rows) {
  static_assert(kBQ == kBK, "the backward's pair tiles take query and key tiles of one size");
  std::memset(words, 0, sizeof(std::uint32_t) * kBK * (kBQ / 2));
  for (int u = 0; 2 * u < rows; ++u) {
    const float* a = M + 2 * u * kBK;
    const float* b = 2 * u + 1 < rows ? a + kBK : nullptr;
    for (int j = 0; j < kBK; ++j)
      words[j * (kBQ / 2) + u] = std::uint32_t(bf16_bits(a[j])) | (b ? std::uint32_t(bf16_bits(b[j])) << 16 : 0u);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// S[r][0:kBK] = Σ_p A[r][p] · Bt[p][0:kBK] as bf16 pairs, for r < rows (a multiple of 4).
LLMTK_PAIRS_TARGET void pair_product_abt(float* S, const std::uint32_t* A, const std::uint32_t* Bt, int rows, int W) {
  constexpr int NV = kBK / kVec;
  for (int r0 = 0; r0 < rows; r0 += 4) {
    __m512 acc[4][NV];
    for (auto& row : acc)
      for (auto& a : row) a = _mm512_setzero_ps();
    for (int p = 0; p < W; ++p) {
      __m512i b[NV];
      for (int c = 0; c < NV; ++c) b[c] = _mm512_loadu_si512(Bt + p * kBK + c * kVec);
      for (int r = 0; r < 4; ++r) {
        const __m512i a = _mm512_set1_epi32(int(A[(r0 + r) * W + p]));
        for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)a, (__m512bh)b[c]);
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < NV; ++c) _mm512_storeu_ps(S + (r0 + r) * kBK + c * kVec, acc[r][c]);
  }
}
// C[r][0:Dp] += Σ_t M[r][t] · V[t][0:Dp] as bf16 pairs (M: rows of kBK / 2 words), Dp = NV · kVec.
template <int NV>
LLMTK_PAIRS_TARGET void pair_accumulate(float* C, const std::uint32_t* M, int nr, const std::uint32_t* V) {
  constexpr int R = NV > 8 ? 1 : NV > 4 ? 2 : 4;
  constexpr int Dp = NV * kVec, T = kBK / 2;
  for (int r0 = 0; r0 < nr; r0 += R) {
    __m512 acc[R][NV];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_loadu_ps(C + (r0 + r) * Dp + c * kVec);
    for (int t = 0; t < T; ++t) {
      __m512i v[NV];
      for (int c = 0; c < NV; ++c) v[c] = _mm512_loadu_si512(V + t * Dp + c * kVec);
      for (int r = 0; r < R; ++r) {
        const __m512i m = _mm512_set1_epi32(int(M[(r0 + r) * T + t]));
        for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)m, (__m512bh)v[c]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < NV; ++c) _mm512_storeu_ps(C + (r0 + r) * Dp + c * kVec, acc[r][c]);
  }
}
#else
void pair_product_abt(float*, const std::uint32_t*, const std::uint32_t*, int, int) {}
template <int NV>
void pair_accumulate(float*, const std::uint32_t*, int, const std::uint32_t*) {}
#endif
using PairAccumulateFn = void (*)(float*, const std::uint32_t*, int, const std::uint32_t*);
PairAccumulateFn pair_accumulate_for(int Dp) {
  return for_width<PairAccumulateFn>(Dp,
                                     [](auto nv) -> PairAccumulateFn { return &pair_accumulate<decltype(nv)::value>; });
}

// Copies `rows` rows of D values (source row stride `stride`, f32 or bf16: tiles are f32) into a
// rows_padded × Dp tile, zeros elsewhere.
template <class T>
void load_rows(float* tile, const T* src, std::int64_t stride, int rows, int rows_padded, int D, int Dp) {
  std::memset(tile, 0, sizeof(float) * std::size_t(rows_padded) * std::size_t(Dp));
  for (int r = 0; r < rows; ++r) {
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(tile + r * Dp, src + r * stride, sizeof(float) * std::size_t(D));
    } else {
#pragma omp simd
      for (int d = 0; d < D; ++d) tile[r * Dp + d] = ld(src + r * stride, d);
    }
  }
}
// The transpose: tile[d][r] = src[r][d], a Dp × kBK tile, zeros elsewhere.
template <class T>
void load_transposed(float* tile, const T* src, std::int64_t stride, int rows, int D, int Dp) {
  std::memset(tile, 0, sizeof(float) * std::size_t(Dp) * kBK);
  for (int r = 0; r < rows; ++r)
    for (int d = 0; d < D; ++d) tile[d * kBK + r] = ld(src + r * stride, d);
}

// The mask and ALiBi as one rule (AttentionMask): score adjustment for query position i and key
// position j, or -inf when j is not visible (or beyond the row's keys, j ≥ Tk).
struct Visibility {
  bool causal;
  int window;
  float slope;          // ALiBi slope of this head (0 without ALiBi)
  std::int64_t Tk;      // keys of this batch row: all of them, or its padding length
  const std::int32_t* seg;  // this batch row's document ids, or null
  const float* bias;        // the learned bias at (query 0, key 0) of this head, or null: [Tq, Tk, H]
  std::int64_t keys, heads, qoff;  // all keys (Tk), H, and the first query's position
  Visibility(const AttentionMask& m, const Shape& S, std::int64_t b, std::int64_t h)
      : causal(m.causal), window(m.window), slope(m.alibi ? float(backend::alibi_slope(h, S.H)) : 0.0f),
        Tk(m.lengths ? std::min<std::int64_t>(S.Tk, m.lengths.i32()[b]) : S.Tk),
        seg(m.segments ? m.segments.i32() + b * S.Tk : nullptr), bias(m.bias ? m.bias.f32() + h : nullptr), keys(S.Tk),
        heads(S.H), qoff(m.q_offset) {}
  // Row r of a tile: scores s[j] (key j0 + j) scaled, shifted by ALiBi and masked in place.
  void apply(float* s, std::int64_t i, std::int64_t j0, float scale) const {
    if (seg) {
      const std::int32_t doc = seg[i];
      for (int j = 0; j < kBK; ++j)
        if (j0 + j < Tk && seg[j0 + j] != doc) s[j] = kNegInf;  // another document: hidden below
    }
#pragma omp simd
    for (int j = 0; j < kBK; ++j) {
      const std::int64_t key = j0 + j;
      const bool hidden = key >= Tk || (causal && key > i) || (window > 0 && (i - key >= window || key - i >= window)) ||
                          s[j] == kNegInf;
      const float v = s[j] * scale - slope * float(i - key);
      s[j] = hidden ? kNegInf : v;
    }
    if (bias) {  // after the scale, as the contract has it (keys past Tk are hidden already)
      const float* row = bias + (i - qoff) * keys * heads;
      const int n = int(std::min<std::int64_t>(kBK, keys - j0));
      for (int j = 0; j < n; ++j) s[j] += row[(j0 + j) * heads];
    }
  }
};

// The keys [lo, hi) that some query in positions [p0, p1] may see.
void key_range(const AttentionMask& m, std::int64_t p0, std::int64_t p1, std::int64_t Tk, std::int64_t& lo,
               std::int64_t& hi) {
  hi = m.causal ? std::min(Tk, p1 + 1) : m.window > 0 ? std::min(Tk, p1 + m.window) : Tk;
  lo = m.window > 0 ? std::max<std::int64_t>(0, p0 - m.window + 1) : 0;
}

int padded(std::int64_t D) { return int((D + kVec - 1) / kVec * kVec); }

}  // namespace

void attention_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v, AttentionMask mask) {
  const char* op = "attention_forward";
  const Shape S = backend::attention_shape(q, k);
  LLMTK_CHECK(S.D <= kMaxD, op, "head size ", S.D, " is larger than ", kMaxD, ", the most the cpu backend's tiles hold");
  const float scale = 1.0f / std::sqrt(float(S.D));
  const std::int64_t qstride = S.H * S.D, kstride = S.KV * S.D, group = S.H / S.KV;
  const int D = int(S.D), Dp = padded(S.D);
  const AccumulateFn accumulate = accumulate_for(Dp);
  const std::int64_t qtiles = (S.T + kBQ - 1) / kBQ, ktiles = (S.Tk + kBK - 1) / kBK;
  // A thread keeps the key tiles it has loaded (K transposed, V) of its current batch row and kv
  // head: the query tiles of a head and the heads of a GQA group read them again. Up to
  // kCachedKeys keys (per thread: 2 · Tk · Dp floats); beyond, each tile is loaded when used.
  constexpr std::int64_t kCachedKeys = 4096;
  const bool cache = S.Tk <= kCachedKeys;
  const int threads = max_threads();
  // bf16 pairs (above) for bf16 activations of an even head size on a CPU with AVX512_BF16.
  const bool pairs = q.dtype == DType::bf16 && D % 2 == 0 && has_bf16_pairs();
  const PairAccumulateFn pair_accumulate_dp = pair_accumulate_for(Dp);
  // Per thread: Q tile, O accumulator, K transposed, V tile, scores, P as pairs, row max and sum,
  // and the cache. (Tiles of pairs take the f32 tiles' places: as many 32-bit words or fewer.)
  const std::size_t per_thread = std::size_t(2 * kBQ * Dp + kMaxD * kBK + kBK * Dp + kBQ * kBK + kBQ * kBK / 2 + 2 * kBQ) +
                                 (cache ? std::size_t(ktiles) * std::size_t(2 * Dp * kBK) : 0);
  float* buffers = scratch(std::size_t(threads) * per_thread);
  std::vector<std::int64_t> cached_row(std::size_t(threads), -1);  // b · KV + g of the cached tiles
  std::vector<std::uint8_t> loaded(cache ? std::size_t(threads) * std::size_t(ktiles) : 0);
  by_dtype(q.dtype, [&]<class E>() {  // E: the storage type of q, k, v and out (f32 or bf16)
  // Static: a thread takes consecutive query tiles of the same heads, and finds their keys cached.
#pragma omp parallel for collapse(3) schedule(static)
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t h = 0; h < S.H; ++h)
      for (std::int64_t qt = 0; qt < qtiles; ++qt) {
        const int thread = omp_get_thread_num();
        float* Qs = buffers + std::size_t(thread) * per_thread;
        float* O = Qs + kBQ * Dp;
        float* Kt = O + kBQ * Dp;
        float* Vs = Kt + kMaxD * kBK;
        float* Ss = Vs + kBK * Dp;
        auto* Pw = reinterpret_cast<std::uint32_t*>(Ss + kBQ * kBK);
        float* mx = Ss + kBQ * kBK + kBQ * kBK / 2;
        float* sum = mx + kBQ;
        float* key_cache = sum + kBQ;  // tile jt: Kᵀ at 2·jt·Dp·kBK, V after it
        const std::int64_t g = h / group, i0 = qt * kBQ;
        std::uint8_t* tile_loaded = cache ? loaded.data() + std::size_t(thread) * std::size_t(ktiles) : nullptr;
        if (cache && cached_row[std::size_t(thread)] != b * S.KV + g) {
          cached_row[std::size_t(thread)] = b * S.KV + g;
          std::fill(tile_loaded, tile_loaded + ktiles, std::uint8_t(0));
        }
        const int rows = int(std::min<std::int64_t>(kBQ, S.T - i0)), rows4 = (rows + 3) & ~3;
        const std::int64_t p0 = mask.q_offset + i0;  // the first query's position among the keys
        const E* Q = as<E>(q) + (b * S.T + i0) * qstride + h * S.D;
        const E* K = as<E>(k) + b * S.Tk * kstride + g * S.D;
        const E* V = as<E>(v) + b * S.Tk * kstride + g * S.D;
        const Visibility vis(mask, S, b, h);
        auto words = [](float* f) { return reinterpret_cast<std::uint32_t*>(f); };
        if constexpr (std::is_same_v<E, std::uint16_t>) {
          if (pairs) pair_rows(words(Qs), Q, qstride, rows, rows4, D, Dp / 2);
          else load_rows(Qs, Q, qstride, rows, rows4, D, Dp);
        } else {
          load_rows(Qs, Q, qstride, rows, rows4, D, Dp);
        }
        std::memset(O, 0, sizeof(float) * std::size_t(rows4) * std::size_t(Dp));
        std::fill(mx, mx + kBQ, kNegInf);
        std::fill(sum, sum + kBQ, 0.0f);
        std::int64_t lo, hi;
        key_range(mask, p0, p0 + rows - 1, vis.Tk, lo, hi);
        for (std::int64_t j0 = lo / kBK * kBK; j0 < hi; j0 += kBK) {
          const int keys = int(std::min<std::int64_t>(kBK, S.Tk - j0));
          float* Kt_tile = Kt;
          float* V_tile = Vs;
          bool load = true;
          if (cache) {
            const std::int64_t jt = j0 / kBK;
            Kt_tile = key_cache + 2 * jt * Dp * kBK, V_tile = Kt_tile + Dp * kBK;
            load = !tile_loaded[jt];
            tile_loaded[jt] = 1;
          }
          if (load) {
            if constexpr (std::is_same_v<E, std::uint16_t>) {
              if (pairs) {
                pair_columns(words(Kt_tile), K + j0 * kstride, kstride, keys, D, Dp / 2);
                pair_keys(words(V_tile), V + j0 * kstride, kstride, keys, D, Dp);
              } else {
                load_transposed(Kt_tile, K + j0 * kstride, kstride, keys, D, Dp);
                load_rows(V_tile, V + j0 * kstride, kstride, keys, kBK, D, Dp);
              }
            } else {
              load_transposed(Kt_tile, K + j0 * kstride, kstride, keys, D, Dp);
              load_rows(V_tile, V + j0 * kstride, kstride, keys, kBK, D, Dp);
            }
          }
          if (pairs) pair_product_abt(Ss, words(Qs), words(Kt_tile), rows4, Dp / 2);
          else product_abt(Ss, Qs, Kt_tile, rows4, Dp);
          for (int r = 0; r < rows; ++r) {
            float* s = Ss + r * kBK;
            vis.apply(s, p0 + r, j0, scale);
            float m = mx[r];
#pragma omp simd reduction(max : m)
            for (int j = 0; j < kBK; ++j) m = std::max(m, s[j]);
            if (m == kNegInf) {  // nothing visible in this tile for this row yet
              std::fill(s, s + kBK, 0.0f);
              continue;
            }
            const float correction = fast_exp(mx[r] - m), mr = m;  // exp(−inf) = 0 on the first tile
            float l = 0;
#pragma omp simd reduction(+ : l)
            for (int j = 0; j < kBK; ++j) l += (s[j] = fast_exp(s[j] - mr));
            sum[r] = sum[r] * correction + l;
            mx[r] = m;
            float* o = O + r * Dp;
#pragma omp simd
            for (int d = 0; d < Dp; ++d) o[d] *= correction;
          }
          if (pairs) {
            round_pairs(Pw, Ss, rows4);
            pair_accumulate_dp(O, Pw, rows4, words(V_tile));
          } else {
            accumulate(O, Ss, kBK, 1, rows4, kBK, V_tile);
          }
        }
        E* dst = as<E>(out) + (b * S.T + i0) * qstride + h * S.D;
        float* lse_row = lse.f32() + (b * S.H + h) * S.T + i0;
        for (int r = 0; r < rows; ++r) {
          // A query that saw no key (padding with a window): out 0, lse −inf (AttentionMask).
          const float inv = sum[r] > 0 ? 1.0f / sum[r] : 0.0f;
          for (int d = 0; d < D; ++d) st(dst + r * qstride, d, O[r * Dp + d] * inv);
          lse_row[r] = sum[r] > 0 ? mx[r] + std::log(sum[r]) : kNegInf;
        }
      }
  });
}

void attention_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q, TensorRef k,
                        TensorRef v, TensorRef out, TensorRef lse, AttentionMask mask) {
  const char* op = "attention_backward";
  const Shape S = backend::attention_shape(q, k);
  LLMTK_CHECK(S.D <= kMaxD, op, "head size ", S.D, " is larger than ", kMaxD, ", the most the cpu backend's tiles hold");
  const float scale = 1.0f / std::sqrt(float(S.D));
  const std::int64_t qstride = S.H * S.D, kstride = S.KV * S.D, group = S.H / S.KV, T = S.T;
  // Queries stand at positions qoff .. qoff + T − 1 among Tk = qoff + T keys (qoff > 0: keys
  // before the queries' own, a prefix's).
  const std::int64_t qoff = mask.q_offset, Tk = S.Tk;
  const int D = int(S.D), Dp = padded(S.D);
  const AccumulateFn accumulate = accumulate_for(Dp);
  // Per thread: K, Kᵀ, Vᵀ, dK, dV tiles (key side); Q, dO, dQ tiles (query side); P and dS;
  // δ for every query row of the group's heads (linear in T); with bf16 activations, dq of the
  // group's heads in f32, summed over key tiles there and rounded once at the end.
  const bool half = q.dtype == DType::bf16;
  // bf16 pairs (as in the forward): the five products on bf16 pairs, P and dS rounded to bf16
  // where they meet dO, Q and K (as GPU flash attention kernels do); dq, dk, dv sum in f32. The
  // pair tiles take the f32 tiles' places (K pairs of keys in Ks, Kᵀ and Vᵀ as words in Kt and Vt,
  // Q and dO as words and as pairs of rows in Qs and dOs), plus Pᵀ, dSᵀ and dS as words.
  const bool pairs = half && D % 2 == 0 && has_bf16_pairs();
  const PairAccumulateFn pair_accumulate_dp = pair_accumulate_for(Dp);
  const std::size_t per_thread = std::size_t(3 * kBK * Dp + 2 * kMaxD * kBK + 3 * kBQ * Dp + 2 * kBQ * kBK) +
                                 std::size_t(group * T) + (half ? std::size_t(group * T * D) : 0) +
                                 (pairs ? std::size_t(3 * kBQ * kBK / 2) : 0);
  float* buffers = scratch(std::size_t(max_threads()) * per_thread);
  by_dtype(q.dtype, [&]<class E>() {  // E: the storage type of the activations (f32 or bf16)
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t g = 0; g < S.KV; ++g) {
      float* Ks = buffers + std::size_t(omp_get_thread_num()) * per_thread;
      float* dKs = Ks + kBK * Dp;
      float* dVs = dKs + kBK * Dp;
      float* Kt = dVs + kBK * Dp;
      float* Vt = Kt + kMaxD * kBK;
      float* Qs = Vt + kMaxD * kBK;
      float* dOs = Qs + kBQ * Dp;
      float* dQs = dOs + kBQ * Dp;
      float* P = dQs + kBQ * Dp;
      float* dS = P + kBQ * kBK;
      float* delta = dS + kBQ * kBK;
      const std::int64_t h0 = g * group;
      // Where dq of head h0 + hh, query i, sums: dq itself in f32, else f32 rows here.
      float* dq32 = delta + group * T;
      auto words = [](float* f) { return reinterpret_cast<std::uint32_t*>(f); };
      std::uint32_t* PtW = words(dq32 + (half ? group * T * D : 0));  // Pᵀ, dSᵀ, dS as words
      std::uint32_t* dStW = PtW + kBK * kBQ / 2;
      std::uint32_t* dSw = dStW + kBK * kBQ / 2;
      auto dq_row = [&](std::int64_t hh, std::int64_t i) {
        return half ? dq32 + (hh * T + i) * D : dq.f32() + (b * T + i) * qstride + (h0 + hh) * S.D;
      };
      // dbias of this row's heads of the group starts at zero (keys no query sees keep it).
      if (mask.dbias)
        for (std::int64_t n = 0; n < T * Tk; ++n)
          for (std::int64_t hh = 0; hh < group; ++hh) mask.dbias.f32()[(b * T * Tk + n) * S.H + h0 + hh] = 0.0f;
      // δ_i = dO_i · out_i per query head of the group; dq rows of these heads start at zero.
      for (std::int64_t hh = 0; hh < group; ++hh)
        for (std::int64_t i = 0; i < T; ++i) {
          const std::int64_t row = (b * T + i) * qstride + (h0 + hh) * S.D;
          const E *dO = as<E>(dout) + row, *O = as<E>(out) + row;
          float s = 0;
#pragma omp simd reduction(+ : s)
          for (int d = 0; d < D; ++d) s += ld(dO, d) * ld(O, d);
          delta[hh * T + i] = s;
          std::fill(dq_row(hh, i), dq_row(hh, i) + D, 0.0f);
        }
      const E* K = as<E>(k) + b * Tk * kstride + g * S.D;
      const E* V = as<E>(v) + b * Tk * kstride + g * S.D;
      for (std::int64_t j0 = 0; j0 < Tk; j0 += kBK) {
        const int keys = int(std::min<std::int64_t>(kBK, Tk - j0));
        if constexpr (std::is_same_v<E, std::uint16_t>) {
          if (pairs) {
            pair_keys(words(Ks), K + j0 * kstride, kstride, keys, D, Dp);
            pair_columns(words(Kt), K + j0 * kstride, kstride, keys, D, Dp / 2);
            pair_columns(words(Vt), V + j0 * kstride, kstride, keys, D, Dp / 2);
          }
        }
        if (!pairs) {
          load_rows(Ks, K + j0 * kstride, kstride, keys, kBK, D, Dp);
          load_transposed(Kt, K + j0 * kstride, kstride, keys, D, Dp);
          load_transposed(Vt, V + j0 * kstride, kstride, keys, D, Dp);
        }
        std::memset(dKs, 0, sizeof(float) * std::size_t(kBK) * std::size_t(Dp));
        std::memset(dVs, 0, sizeof(float) * std::size_t(kBK) * std::size_t(Dp));
        // The queries that see some key of this tile: [qlo, qhi) (query i stands at qoff + i).
        const std::int64_t last = j0 + keys - 1;
        const std::int64_t qlo = mask.causal ? std::max<std::int64_t>(0, j0 - qoff)
                                 : mask.window > 0 ? std::max<std::int64_t>(0, j0 - mask.window + 1 - qoff)
                                                   : 0;
        const std::int64_t qhi = mask.window > 0 ? std::min(T, last + mask.window - qoff) : T;
        for (std::int64_t hh = 0; hh < group; ++hh) {
          const std::int64_t h = h0 + hh;
          const Visibility vis(mask, S, b, h);
          for (std::int64_t i0 = qlo / kBQ * kBQ; i0 < qhi; i0 += kBQ) {
            const int rows = int(std::min<std::int64_t>(kBQ, T - i0)), rows4 = (rows + 3) & ~3;
            const std::int64_t row0 = (b * T + i0) * qstride + h * S.D;
            // With pairs: Q and dO as words (rows) at Qs and dOs, and as pairs of rows half a tile on.
            std::uint32_t *Q2 = words(Qs) + kBQ * Dp / 2, *dO2 = words(dOs) + kBQ * Dp / 2;
            if constexpr (std::is_same_v<E, std::uint16_t>) {
              if (pairs) {
                pair_rows(words(Qs), as<E>(q) + row0, qstride, rows, rows4, D, Dp / 2);
                pair_rows(words(dOs), as<E>(dout) + row0, qstride, rows, rows4, D, Dp / 2);
                pair_keys(Q2, as<E>(q) + row0, qstride, rows, D, Dp);
                pair_keys(dO2, as<E>(dout) + row0, qstride, rows, D, Dp);
              }
            }
            if (pairs) {
              pair_product_abt(P, words(Qs), words(Kt), rows4, Dp / 2);
              pair_product_abt(dS, words(dOs), words(Vt), rows4, Dp / 2);  // dP = dO·Vᵀ, turned into dS below
            } else {
              load_rows(Qs, as<E>(q) + row0, qstride, rows, rows4, D, Dp);
              load_rows(dOs, as<E>(dout) + row0, qstride, rows, rows4, D, Dp);
              product_abt(P, Qs, Kt, rows4, Dp);
              product_abt(dS, dOs, Vt, rows4, Dp);  // dP = dO·Vᵀ, turned into dS below
            }
            const float* lse_row = lse.f32() + (b * S.H + h) * T + i0;
            for (int r = 0; r < rows4; ++r) {
              float* p = P + r * kBK;
              float* ds = dS + r * kBK;
              if (r >= rows) {  // padding rows contribute nothing
                std::fill(p, p + kBK, 0.0f), std::fill(ds, ds + kBK, 0.0f);
                continue;
              }
              vis.apply(p, qoff + i0 + r, j0, scale);
              const float l = lse_row[r], dl = delta[hh * T + i0 + r];
              if (l == kNegInf) {  // a query that saw no key contributes nothing
                std::fill(p, p + kBK, 0.0f), std::fill(ds, ds + kBK, 0.0f);
                continue;
              }
#pragma omp simd
              for (int j = 0; j < kBK; ++j) {
                const float pj = fast_exp(p[j] - l);  // masked: exp(−inf) = 0
                p[j] = pj;
                ds[j] = pj * (ds[j] - dl) * scale;
              }
              if (mask.dbias) {  // the bias's gradient: dS before the scale
                float* row = mask.dbias.f32() + ((b * T + i0 + r) * Tk + j0) * S.H + h;
                for (int j = 0; j < keys; ++j) row[j * S.H] = ds[j] / scale;
              }
            }
            std::memset(dQs, 0, sizeof(float) * std::size_t(rows4) * std::size_t(Dp));
            if (pairs) {
              round_column_pairs(PtW, P, rows4);
              round_column_pairs(dStW, dS, rows4);
              round_pairs(dSw, dS, rows4);
              pair_accumulate_dp(dVs, PtW, kBK, dO2);         // dV += Pᵀ·dO
              pair_accumulate_dp(dKs, dStW, kBK, Q2);         // dK += dSᵀ·Q
              pair_accumulate_dp(dQs, dSw, rows4, words(Ks));  // dQ = dS·K
            } else {
              accumulate(dVs, P, 1, kBK, kBK, rows4, dOs);  // dV += Pᵀ·dO
              accumulate(dKs, dS, 1, kBK, kBK, rows4, Qs);  // dK += dSᵀ·Q
              accumulate(dQs, dS, kBK, 1, rows4, kBK, Ks);  // dQ = dS·K
            }
            for (int r = 0; r < rows; ++r) {
              float* dst = dq_row(hh, i0 + r);
#pragma omp simd
              for (int d = 0; d < D; ++d) dst[d] += dQs[r * Dp + d];
            }
          }
        }
        E* dK = as<E>(dk) + (b * Tk + j0) * kstride + g * S.D;
        E* dV = as<E>(dv) + (b * Tk + j0) * kstride + g * S.D;
        for (int r = 0; r < keys; ++r)
          for (int d = 0; d < D; ++d) st(dK + r * kstride, d, dKs[r * Dp + d]), st(dV + r * kstride, d, dVs[r * Dp + d]);
      }
      if (half)  // dq of the group's heads, rounded once
        for (std::int64_t hh = 0; hh < group; ++hh)
          for (std::int64_t i = 0; i < T; ++i)
            to_bf16_serial(as<std::uint16_t>(dq) + (b * T + i) * qstride + (h0 + hh) * S.D, dq_row(hh, i), D);
    }
  });
}

}  // namespace llmtk::cpu
