// Forward of a grouped convolution with few output channels per group (PyConv's large-kernel levels),
// channels-last, stride 1, on CPU. oneDNN runs these grouped convs far below its dense speed; phrased as
// depthwise convs they need a separate sum over each group's channels. Here, per vector of channels, one
// kernel row's weights stay in registers while a window of J output pixels slides along the input row (each
// input vector is loaded once for all the taps it feeds), and the group sums are taken in registers.
//
// out[n, i, j, g*M + m] = sum over (ci, a, b) of w[g*M + m, ci, a, b] * x[n, i - ph + a*dh, j - pw + b, g*cg + ci]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "vec.h"

namespace {

using convzoo::kLanes, convzoo::kVectorBytes, convzoo::kVectorRegisters, convzoo::load, convzoo::Vec;

// Lane k <- lane (k + S) mod L.
template <typename T, int S, size_t... I>
inline Vec<T> rotate(Vec<T> v, std::index_sequence<I...>) {
#ifdef __clang__
  return __builtin_shufflevector(v, v, ((I + S) % sizeof...(I))...);
#else
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef Index IndexVec __attribute__((vector_size(kVectorBytes)));
  return __builtin_shuffle(v, IndexVec{static_cast<Index>((I + S) % sizeof...(I))...});
#endif
}

// Lane k <- sum of lanes k .. k + CG - 1 (mod L): each group's sum lands in its first lane.
template <typename T, int CG>
inline Vec<T> group_reduce(Vec<T> v) {
  if constexpr (CG > 1) {
    v = group_reduce<T, CG / 2>(v);
    v += rotate<T, CG / 2>(v, std::make_index_sequence<kLanes<T>>{});
  }
  return v;
}

// out[g * M] = sum of t[g*cg .. (g+1)*cg) over a row t of C channels. CG = cg where it is a power of two
// below the lane count; CG = 0: cg a multiple of the lanes; CG = -1: any cg, one channel at a time.
template <typename T, int CG>
void sum_groups(const T* t, T* out, int64_t C, int64_t cg, int64_t M) {
  constexpr int L = kLanes<T>;
  if constexpr (CG > 0) {
    for (int64_t c0 = 0; c0 < C; c0 += L) {
      const Vec<T> v = group_reduce<T, CG>(load(t + c0));
      for (int k = 0; k < L / CG; ++k) out[(c0 / CG + k) * M] = v[k * CG];
    }
  } else if constexpr (CG == 0) {
    for (int64_t g = 0; g < C / cg; ++g) {
      Vec<T> v = load(t + g * cg);
      for (int64_t c = L; c < cg; c += L) v += load(t + g * cg + c);
      out[g * M] = group_reduce<T, L>(v)[0];
    }
  } else {
    for (int64_t g = 0; g < C / cg; ++g) {
      T s = 0;
      for (int64_t ci = 0; ci < cg; ++ci) s += t[g * cg + ci];
      out[g * M] = s;
    }
  }
}

template <typename T>
using SumFn = void (*)(const T*, T*, int64_t, int64_t, int64_t);

template <typename T>
SumFn<T> sum_function(int64_t cg) {
  constexpr int L = kLanes<T>;
  if (cg % L == 0) return sum_groups<T, 0>;
  if (L % cg == 0) {
    switch (cg) {
      case 1: return sum_groups<T, 1>;
      case 2: return sum_groups<T, 2>;
      case 4: return sum_groups<T, 4>;
      case 8: return sum_groups<T, 8>;
    }
  }
  return sum_groups<T, -1>;
}

struct Geometry {
  int64_t N, H, W, C, Ho, Wo, kh, ph, pw, dh, cg;
};

// Output row i of sample n, pixels [j0, j0 + J), channels [c0, c0 + L): tmp (M, J, C) = per-channel sums of
// w * x over the kernel. Input columns outside the row read as zeros (the padding).
template <typename T, int M, int KW, int J>
void window(const T* x, const T* wt, T* tmp, const Geometry& q, int64_t n, int64_t i, int64_t j0, int64_t c0) {
  using V = Vec<T>;
  const int64_t C = q.C;
  V acc[M][J];
#pragma GCC unroll 64
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 64
    for (int jj = 0; jj < J; ++jj) acc[m][jj] = V{};
  const bool inside = j0 - q.pw >= 0 && j0 - q.pw + J + KW - 1 <= q.W;
  for (int64_t a = 0; a < q.kh; ++a) {
    const int64_t y = i - q.ph + a * q.dh;
    if (y < 0 || y >= q.H) continue;
    const T* xrow = x + (n * q.H + y) * q.W * C + c0;
    V w[KW][M];
#pragma GCC unroll 64
    for (int b = 0; b < KW; ++b)
#pragma GCC unroll 64
      for (int m = 0; m < M; ++m) w[b][m] = load(wt + ((a * KW + b) * M + m) * C + c0);
#pragma GCC unroll 64
    for (int p = 0; p < J + KW - 1; ++p) {
      const int64_t xx = j0 - q.pw + p;
      const V xv = (inside || (xx >= 0 && xx < q.W)) ? load(xrow + xx * C) : V{};
#pragma GCC unroll 64
      for (int b = 0; b < KW; ++b) {
        const int jj = p - b;
        if (jj < 0 || jj >= J) continue;
#pragma GCC unroll 64
        for (int m = 0; m < M; ++m) acc[m][jj] += w[b][m] * xv;
      }
    }
  }
#pragma GCC unroll 64
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 64
    for (int jj = 0; jj < J; ++jj) convzoo::store(tmp + (m * J + jj) * C + c0, acc[m][jj]);
}

template <typename T, int M, int KW>
void forward_impl(const T* x, const T* wt, T* out, const Geometry& q) {
  // Pixels per window: the accumulators (M * J) and, where that leaves at least two pixels, one row of weights
  // (M * KW) in the vector registers; otherwise the weights are read from L1 (the compiler spills them).
  constexpr bool kWeightsInRegisters = M * (KW + 2) + 1 <= kVectorRegisters;
  constexpr int J = std::clamp((kVectorRegisters - (kWeightsInRegisters ? 1 + M * KW : 2)) / M, 1, 16);
  const int64_t groups = q.C / q.cg, O = groups * M;
  const SumFn<T> sum = sum_function<T>(q.cg);
  at::parallel_for(0, q.N * q.Ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> tmp(M * J * q.C);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / q.Ho, i = r % q.Ho;
      for (int64_t j0 = 0; j0 < q.Wo; j0 += J) {
        for (int64_t c0 = 0; c0 < q.C; c0 += kLanes<T>) window<T, M, KW, J>(x, wt, tmp.data(), q, n, i, j0, c0);
        const int64_t jn = std::min<int64_t>(J, q.Wo - j0);
        for (int64_t jj = 0; jj < jn; ++jj)
          for (int m = 0; m < M; ++m)
            sum(tmp.data() + (m * J + jj) * q.C, out + (r * q.Wo + j0 + jj) * O + m, q.C, q.cg, M);
      }
    }
  });
}

template <typename T>
using ForwardFn = void (*)(const T*, const T*, T*, const Geometry&);

// The (outputs per group, kernel width) pairs built (grouped_kernels.FORWARD_KERNELS): with AVX-512, one kernel
// row of weights and a window of at least two pixels fit the registers for each.
template <typename T>
ForwardFn<T> forward_function(int64_t M, int64_t kw) {
  switch (M * 100 + kw) {
    case 103: return forward_impl<T, 1, 3>;
    case 105: return forward_impl<T, 1, 5>;
    case 107: return forward_impl<T, 1, 7>;
    case 109: return forward_impl<T, 1, 9>;
    case 111: return forward_impl<T, 1, 11>;
    case 203: return forward_impl<T, 2, 3>;
    case 205: return forward_impl<T, 2, 5>;
    case 207: return forward_impl<T, 2, 7>;
    case 209: return forward_impl<T, 2, 9>;
    case 403: return forward_impl<T, 4, 3>;
    case 405: return forward_impl<T, 4, 5>;
    default: return nullptr;
  }
}

}  // namespace

// x (N, H, W, C) and wt (kh, kw, M, C) contiguous -> (N, Ho, Wo, groups * M); stride 1, width dilation 1.
at::Tensor grouped_forward(const at::Tensor& x, const at::Tensor& wt, std::vector<int64_t> padding, int64_t dilation_h,
                           int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && wt.dim() == 4 && x.is_contiguous() && wt.is_contiguous() && !x.is_cuda(),
              "grouped_forward: NHWC contiguous CPU input and (kh, kw, M, C) weights expected");
  TORCH_CHECK(x.scalar_type() == wt.scalar_type() && wt.size(3) == x.size(3) && x.size(3) % groups == 0,
              "grouped_forward: weights of the input's dtype and channels, channels a multiple of groups");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t kh = wt.size(0), kw = wt.size(1), M = wt.size(2);
  TORCH_CHECK(forward_function<float>(M, kw) != nullptr,
              "grouped_forward: outputs per group and kernel width not built");
  const int64_t Ho = H + 2 * padding[0] - dilation_h * (kh - 1), Wo = W + 2 * padding[1] - (kw - 1);
  TORCH_CHECK(Ho > 0 && Wo > 0, "grouped_forward: output would be empty");
  Geometry q{N, H, W, C, Ho, Wo, kh, padding[0], padding[1], dilation_h, C / groups};
  auto out = at::empty({N, Ho, Wo, groups * M}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grouped_forward", [&] {
    TORCH_CHECK(C % kLanes<scalar_t> == 0, "grouped_forward: channels must fill whole vectors");
    forward_function<scalar_t>(M, kw)(x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), q);
  });
  return out;
}
