// Weight gradient of a grouped convolution with one output channel per group (a depthwise conv followed by
// a sum over each group's input channels), channels-last, on CPU.
//
// gw[o, ci, a, b] = sum over (n, i, j) of grad_out[n, i, j, o] * x[n, i*sh - ph + a*dh, j*sw - pw + b*dw, o*cg + ci].
// Vectorised over input channels: per output row and kernel row, the kw accumulators of one channel vector
// stay in registers while the row streams by; each thread sums into its own (kh, kw, C) buffer.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "vec.h"

namespace {

// One kernel row: out (KW, C) += sum over j of g[j, c] * xrow[j*sw - pw + b*dw, c].
template <typename T, int KW>
void kernel_row(const T* g, const T* xrow, T* out, int64_t Wo, int64_t W, int64_t C, int64_t sw, int64_t pw,
                int64_t dw) {
  using convzoo::load;
  using V = convzoo::Vec<T>;  // a vector of channels: the accumulators stay in registers (vec.h)
  constexpr int64_t kLanes = convzoo::kLanes<T>;
  int64_t c0 = 0;
  for (; c0 + kLanes <= C; c0 += kLanes) {
    V acc[KW];
    for (int b = 0; b < KW; ++b) acc[b] = V{};
    for (int64_t j = 0; j < Wo; ++j) {
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
                const std::vector<int64_t>& s, const std::vector<int64_t>& p, const std::vector<int64_t>& d) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = gy.size(1), Wo = gy.size(2), O = gy.size(3), cg = C / O;
  const int64_t kh = k[0], kw = k[1], acc_size = kh * kw * C;
  const T* xp = x.data_ptr<T>();
  const T* gp = gy.data_ptr<T>();
  const RowFn<T> row = row_function<T>(kw);
  const int64_t threads = at::get_num_threads();
  std::vector<T> acc(threads * acc_size, T(0));
  std::vector<int64_t> group_of(C);  // input channel -> its group's output channel, computed once
  for (int64_t c = 0; c < C; ++c) group_of[c] = c / cg;
  at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
    T* a = acc.data() + at::get_thread_num() * acc_size;  // (kh, kw, C)
    std::vector<T> g(Wo * C);  // this output row's gradient, one value per input channel
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / Ho, i = r % Ho;
      const T* grow = gp + (n * Ho + i) * Wo * O;
      for (int64_t j = 0; j < Wo; ++j)
        for (int64_t c = 0; c < C; ++c) g[j * C + c] = grow[j * O + group_of[c]];
      for (int64_t ta = 0; ta < kh; ++ta) {
        const int64_t y = i * s[0] - p[0] + ta * d[0];
        if (y < 0 || y >= H) continue;
        row(g.data(), xp + (n * H + y) * W * C, a + ta * kw * C, Wo, W, C, s[1], p[1], d[1]);
      }
    }
  });
  T* out = gw.data_ptr<T>();  // (O, cg, kh, kw): input channel c = o * cg + ci
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < kh * kw; ++t) {
      T sum = 0;
      for (int64_t th = 0; th < threads; ++th) sum += acc[th * acc_size + t * C + c];
      out[c * kh * kw + t] = sum;
    }
}

}  // namespace

// grad_out (N, Ho, Wo, O) and x (N, H, W, C) NHWC contiguous, C = O * cg -> gw (O, cg, kh, kw).
at::Tensor wgrad_one_output_per_group(const at::Tensor& grad_out, const at::Tensor& x, std::vector<int64_t> kernel,
                                      std::vector<int64_t> stride, std::vector<int64_t> padding,
                                      std::vector<int64_t> dilation) {
  TORCH_CHECK(x.dim() == 4 && grad_out.dim() == 4 && x.is_contiguous() && grad_out.is_contiguous(),
              "wgrad_one_output_per_group: NHWC contiguous inputs expected");
  TORCH_CHECK(x.scalar_type() == grad_out.scalar_type() && !x.is_cuda(), "wgrad_one_output_per_group: CPU, one dtype");
  TORCH_CHECK(x.size(3) % grad_out.size(3) == 0, "wgrad_one_output_per_group: channels not a multiple of outputs");
  TORCH_CHECK(row_function<float>(kernel[1]) != nullptr, "wgrad_one_output_per_group: kernel width 1-11, odd");
  auto gw = at::empty({grad_out.size(3), x.size(3) / grad_out.size(3), kernel[0], kernel[1]}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wgrad_one_output_per_group",
                             [&] { wgrad_impl<scalar_t>(grad_out, x, gw, kernel, stride, padding, dilation); });
  return gw;
}
