// Weight gradient of a grouped convolution with few output channels per group (PyConv's large-kernel levels),
// channels-last, on CPU. With M outputs per group it is M depthwise weight gradients, each against output m
// of every group repeated over the group's input channels.
//
// gw[g*M + m, ci, a, b] = sum over (n, i, j) of grad_out[n, i, j, g*M + m]
//                                                 * x[n, i*sh - ph + a*dh, j*sw - pw + b*dw, g*cg + ci].
// Vectorised over input channels: per output row and kernel row, the kw accumulators of one channel vector
// stay in registers while the row streams by; each thread sums into its own (M, kh, kw, C) buffer. At stride 1
// and width dilation 1 a window of J gradient pixels also stays in registers, so each input vector is loaded
// once for the kw taps it feeds instead of once per tap (the loop was bound by loads).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "repeat_row.h"
#include "vec.h"

namespace {

// acc[b] += gv[jj] * x[jj + b] for jj < J, x at pixel j0 - pw: each input vector loaded once for its taps.
// Inside the row the loads need no check (kept as a separate instance: GCC had merged the two cases, with a
// bounds check and an index product per load); at its ends, positions outside [lo, hi) read as zeros.
template <typename T, int KW, int J, bool kInside>
inline void slide(const T* x, const convzoo::Vec<T>* gv, convzoo::Vec<T>* acc, int64_t C, int64_t lo, int64_t hi) {
#pragma GCC unroll 64
  for (int q = 0; q < J + KW - 1; ++q) {
    if constexpr (!kInside) {
      if (q < lo || q >= hi) continue;
    }
    const convzoo::Vec<T> xv = convzoo::load(x + q * C);
#pragma GCC unroll 64
    for (int b = 0; b < KW; ++b) {
      const int jj = q - b;
      if (jj >= 0 && jj < J) acc[b] += gv[jj] * xv;
    }
  }
}

// Stride 1, dilation 1: acc[b] += g[j0 + jj] * x[j0 - pw + jj + b] for jj < J.
template <typename T, int KW, int J>
inline void window(const T* g, const T* xrow, convzoo::Vec<T>* acc, int64_t j0, int64_t W, int64_t C, int64_t pw) {
  convzoo::Vec<T> gv[J];
#pragma GCC unroll 64
  for (int jj = 0; jj < J; ++jj) gv[jj] = convzoo::load(g + (j0 + jj) * C);
  const int64_t x0 = j0 - pw;
  if (x0 >= 0 && x0 + J + KW - 1 <= W)
    slide<T, KW, J, true>(xrow + x0 * C, gv, acc, C, 0, J + KW - 1);
  else
    slide<T, KW, J, false>(xrow + x0 * C, gv, acc, C, -x0, W - x0);
}

// Windows of J pixels from j while they fit, then of J/2, J/4, ... down to one: the rest of a row narrower
// than J, or its tail, stays in registers too. Returns the first pixel not done (Wo).
template <typename T, int KW, int J>
inline int64_t windows(const T* g, const T* xrow, convzoo::Vec<T>* acc, int64_t j, int64_t Wo, int64_t W, int64_t C,
                       int64_t pw) {
  for (; j + J <= Wo; j += J) window<T, KW, J>(g, xrow, acc, j, W, C, pw);
  if constexpr (J > 1) j = windows<T, KW, J / 2>(g, xrow, acc, j, Wo, W, C, pw);
  return j;
}

// One kernel row: out (KW, C) += sum over j of g[j, c] * xrow[j*sw - pw + b*dw, c].
template <typename T, int KW>
void kernel_row(const T* g, const T* xrow, T* out, int64_t Wo, int64_t W, int64_t C, int64_t sw, int64_t pw,
                int64_t dw) {
  using convzoo::load;
  using V = convzoo::Vec<T>;  // a vector of channels: the accumulators stay in registers (vec.h)
  constexpr int64_t kLanes = convzoo::kLanes<T>;
  // Gradient pixels per window: what the KW accumulators and one input vector leave of the registers.
  constexpr int J = std::clamp(convzoo::kVectorRegisters - KW - 2, 1, 16);
  const bool windowed = sw == 1 && dw == 1;
  int64_t c0 = 0;
  for (; c0 + kLanes <= C; c0 += kLanes) {
    V acc[KW];
    for (int b = 0; b < KW; ++b) acc[b] = V{};
    int64_t j = 0;
    if (windowed) j = windows<T, KW, J>(g + c0, xrow + c0, acc, 0, Wo, W, C, pw);
    for (; j < Wo; ++j) {
      const V gj = load(g + j * C + c0);
      const int64_t x0 = j * sw - pw;
      const T* xv = xrow + x0 * C + c0;
      if (x0 >= 0 && x0 + (KW - 1) * dw < W) {
        for (int b = 0; b < KW; ++b) acc[b] += gj * load(xv + b * dw * C);
      } else {
        for (int b = 0; b < KW; ++b) {
          const int64_t xx = x0 + b * dw;
          if (xx >= 0 && xx < W) acc[b] += gj * load(xv + b * dw * C);
        }
      }
    }
    for (int b = 0; b < KW; ++b) {
      convzoo::store(out + b * C + c0, load(out + b * C + c0) + acc[b]);
    }
  }
  for (; c0 < C; ++c0) {  // channels left over from the last full vector
    T acc[KW] = {};
    for (int64_t j = 0; j < Wo; ++j)
      for (int b = 0; b < KW; ++b) {
        const int64_t xx = j * sw - pw + b * dw;
        if (xx >= 0 && xx < W) acc[b] += g[j * C + c0] * xrow[xx * C + c0];
      }
    for (int b = 0; b < KW; ++b) out[b * C + c0] += acc[b];
  }
}

template <typename T>
using RowFn = void (*)(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

template <typename T>
RowFn<T> row_function(int64_t kw) {
  switch (kw) {
    case 1: return kernel_row<T, 1>;
    case 3: return kernel_row<T, 3>;
    case 5: return kernel_row<T, 5>;
    case 7: return kernel_row<T, 7>;
    case 9: return kernel_row<T, 9>;
    case 11: return kernel_row<T, 11>;
    default: return nullptr;
  }
}

template <typename T>
void wgrad_impl(const at::Tensor& gy, const at::Tensor& x, at::Tensor& gw, const std::vector<int64_t>& k,
                const std::vector<int64_t>& s, const std::vector<int64_t>& p, const std::vector<int64_t>& d,
                int64_t groups) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = gy.size(1), Wo = gy.size(2), O = gy.size(3), cg = C / groups, M = O / groups;
  const int64_t kh = k[0], kw = k[1], acc_size = M * kh * kw * C;
  const T* xp = x.data_ptr<T>();
  const T* gp = gy.data_ptr<T>();
  const RowFn<T> row = row_function<T>(kw);
  const convzoo::RepeatFn<T> repeat = convzoo::repeat_function<T>(cg);
  const int64_t threads = at::get_num_threads();
  std::vector<T> acc(threads * acc_size, T(0));
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    T* a = acc.data() + at::get_thread_num() * acc_size;  // (M, kh, kw, C)
    std::vector<T> g(Wo * C);  // this output row's gradient of output m, one value per input channel
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho, i = r % Ho;
      for (int64_t m = 0; m < M; ++m) {
        repeat(gp + (n * Ho + i) * Wo * O, g.data(), Wo, O, M, m, cg);
        for (int64_t ta = 0; ta < kh; ++ta) {
          const int64_t y = i * s[0] - p[0] + ta * d[0];
          if (y < 0 || y >= H) continue;
          row(g.data(), xp + (n * H + y) * W * C, a + (m * kh + ta) * kw * C, Wo, W, C, s[1], p[1], d[1]);
        }
      }
    }
  });
  T* out = gw.data_ptr<T>();  // (O, cg, kh, kw): output g*M + m, input channel c = g * cg + ci
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < kh * kw; ++t) {
        T sum = 0;
        for (int64_t th = 0; th < threads; ++th) sum += acc[th * acc_size + (m * kh * kw + t) * C + c];
        out[(((c / cg) * M + m) * cg + c % cg) * kh * kw + t] = sum;
      }
}

}  // namespace

// grad_out (N, Ho, Wo, O) and x (N, H, W, C) NHWC contiguous, C and O multiples of groups -> gw (O, C/groups, kh, kw).
at::Tensor grouped_wgrad(const at::Tensor& grad_out, const at::Tensor& x, std::vector<int64_t> kernel,
                         std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                         int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && grad_out.dim() == 4 && x.is_contiguous() && grad_out.is_contiguous(),
              "grouped_wgrad: NHWC contiguous inputs expected");
  TORCH_CHECK(x.scalar_type() == grad_out.scalar_type() && !x.is_cuda(), "grouped_wgrad: CPU, one dtype");
  TORCH_CHECK(groups >= 1 && x.size(3) % groups == 0 && grad_out.size(3) % groups == 0,
              "grouped_wgrad: input and output channels must be multiples of groups");
  TORCH_CHECK(row_function<float>(kernel[1]) != nullptr, "grouped_wgrad: kernel width 1-11, odd");
  auto gw = at::empty({grad_out.size(3), x.size(3) / groups, kernel[0], kernel[1]}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grouped_wgrad",
                             [&] { wgrad_impl<scalar_t>(grad_out, x, gw, kernel, stride, padding, dilation, groups); });
  return gw;
}
