// Batched 2D transpose on CPU: the NCHW <-> channels-last layout change. PyTorch's strided copy for this
// permutation runs at a fraction of memory speed (12 ms against 1.5 ms for 16x64x64x48 float32 on 2 cores);
// square tiles that fit in L1 keep both sides' cache lines in use.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace {

constexpr int64_t kTile = 8;

// dst[b, s, r] = src[b, r, s] for src (B, R, S) and dst (B, S, R), both contiguous.
template <typename T>
void transpose_tiles(const T* src, T* dst, int64_t B, int64_t R, int64_t S) {
  const int64_t rt = (R + kTile - 1) / kTile, st = (S + kTile - 1) / kTile;
  at::parallel_for(0, B * rt * st, 64, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (rt * st), r0 = (t / st) % rt * kTile, s0 = t % st * kTile;
      const T* sp = src + b * R * S;
      T* dp = dst + b * R * S;
      if (r0 + kTile <= R && s0 + kTile <= S) {
        for (int64_t s = 0; s < kTile; ++s)
#pragma omp simd
          for (int64_t r = 0; r < kTile; ++r) dp[(s0 + s) * R + r0 + r] = sp[(r0 + r) * S + s0 + s];
      } else {
        const int64_t r1 = std::min(R, r0 + kTile), s1 = std::min(S, s0 + kTile);
        for (int64_t s = s0; s < s1; ++s)
          for (int64_t r = r0; r < r1; ++r) dp[s * R + r] = sp[r * S + s];
      }
    }
  });
}

}  // namespace

// x (B, R, S) contiguous -> (B, S, R) contiguous.
at::Tensor transpose_last(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && !x.is_cuda(), "transpose_last: a contiguous 3-d CPU tensor expected");
  auto out = at::empty({x.size(0), x.size(2), x.size(1)}, x.options());
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "transpose_last", [&] {
    transpose_tiles<scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.size(0), x.size(1), x.size(2));
  });
  return out;
}
