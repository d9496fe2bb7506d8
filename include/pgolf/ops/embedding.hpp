// Token embedding lookup and its deterministic backward.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

// out[n, D] = table[ids[n], :]
template <int D, class T>
void embedding_forward(T* out, const T* table, const std::int32_t* ids, std::int64_t n, int vocab) {
  parallel_for(0, n, 256, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int32_t id = ids[r];
      PGOLF_CHECK(id >= 0 && id < vocab, "token id " << id << " at position " << r << " is outside the vocabulary [0, " << vocab << ")");
      std::memcpy(out + r * D, table + static_cast<std::int64_t>(id) * D, sizeof(T) * D);
    }
  });
}

// dtable[v, :] += Σ_{n : ids[n] = v} dout[n, :], summed in increasing n for every v: the tokens are
// bucketed by id (a counting sort), and each vocabulary row is owned by one thread.
template <int D, class T>
void embedding_backward(T* dtable, const T* dout, const std::int32_t* ids, std::int64_t n, int vocab) {
  std::vector<std::int64_t> start(static_cast<std::size_t>(vocab) + 1, 0);
  for (std::int64_t r = 0; r < n; ++r) ++start[static_cast<std::size_t>(ids[r]) + 1];
  for (int v = 0; v < vocab; ++v) start[v + 1] += start[v];
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::vector<std::int64_t> fill(start.begin(), start.end() - 1);
  for (std::int64_t r = 0; r < n; ++r) order[static_cast<std::size_t>(fill[ids[r]]++)] = r;
  parallel_for(0, vocab, 16, [&](std::int64_t v0, std::int64_t v1) {
    for (std::int64_t v = v0; v < v1; ++v) {
      T* row = dtable + v * D;
      for (std::int64_t k = start[v]; k < start[v + 1]; ++k) {
        const T* g = dout + order[k] * D;
        for (int i = 0; i < D; ++i) row[i] += g[i];
      }
    }
  });
}

}  // namespace pgolf::cpu
