// cub::DeviceRadixSort for the emulated build: the same contract (a size query with a null
// temporary buffer, then a stable sort of key/value pairs by the key's bits [begin, end) with a
// buffer at least that large), done with std::stable_sort on the host.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <vector>

#include "scheduler.hpp"

namespace cub {
struct DeviceRadixSort {
  template <class K, class V>
  static cudaError_t SortPairs(void* temp, std::size_t& temp_bytes, const K* keys_in, K* keys_out, const V* values_in,
                               V* values_out, int n, int begin_bit = 0, int end_bit = int(sizeof(K) * 8),
                               cudaStream_t = nullptr) {
    // Like CUB, a size query (null temp) and then a buffer of at least that size: here the double
    // buffers CUB's radix sort keeps for keys and values, so the backend's scratch sizing is used.
    const std::size_t needed = std::size_t(n > 0 ? n : 0) * (sizeof(K) + sizeof(V)) + 256;
    if (temp == nullptr) {
      temp_bytes = needed;
      return cudaSuccess;
    }
    if (temp_bytes < needed) return cudaErrorInvalidValue;
    if (begin_bit != 0 || end_bit != int(sizeof(K) * 8)) return cudaErrorInvalidValue;  // not needed here
    cuda_emu::DeviceAccess access;
    std::vector<int> order(std::size_t(n > 0 ? n : 0));
    std::iota(order.begin(), order.end(), 0);
    // Ordered as unsigned bits, which is numeric order for the backend's keys (token ids are
    // never negative; real CUB orders signed keys numerically too).
    using U = std::make_unsigned_t<K>;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return U(keys_in[a]) < U(keys_in[b]); });
    std::vector<K> k(order.size());
    std::vector<V> v(order.size());
    for (std::size_t i = 0; i < order.size(); ++i) k[i] = keys_in[order[i]], v[i] = values_in[order[i]];
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
    return cudaSuccess;
  }
};
}  // namespace cub
