// One row of a grouped conv's output gradient repeated over each group's input channels: what both compiled
// backward kernels of a grouped conv (grouped_wgrad.cpp, grouped_dgrad.cpp) multiply with.
#pragma once

#include <cstdint>

namespace convzoo {

// g[j, o*cg + c] = grow[j, o*M + m] for j < Wo, o < O/M, c < cg: output m of every group for every input
// channel, along one row. CG > 0 fixes the group size so the stores vectorise (an indexed copy per channel
// cost a third of the weight-gradient kernel's time).
template <typename T, int CG>
void repeat_row(const T* grow, T* g, int64_t Wo, int64_t O, int64_t M, int64_t m, int64_t cg) {
  if constexpr (CG > 0) cg = CG;
  const int64_t groups = O / M;
  for (int64_t p = 0; p < Wo * groups; ++p) {
    const T v = grow[p * M + m];
#pragma GCC unroll 16
    for (int64_t c = 0; c < cg; ++c) g[p * cg + c] = v;
  }
}

template <typename T>
using RepeatFn = void (*)(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);

template <typename T>
RepeatFn<T> repeat_function(int64_t cg) {
  switch (cg) {
    case 1: return repeat_row<T, 1>;
    case 2: return repeat_row<T, 2>;
    case 4: return repeat_row<T, 4>;
    case 8: return repeat_row<T, 8>;
    case 16: return repeat_row<T, 16>;
    default: return repeat_row<T, 0>;
  }
}

}  // namespace convzoo
