// Input gradient of a grouped convolution with few output channels per group (PyConv's large-kernel levels),
// stride 1, channels-last, on CPU. oneDNN runs it at about a third of its dense speed (like the forward).
//
// gx[n, y, x, g*cg + ci] = sum over (m, a, b) of w[g*M + m, ci, a, b] * gy[n, y + ph - a*dh, x + pw - b, g*M + m]
// i.e. a correlation, with the kernel flipped (wf below), of each output m's gradient repeated over its group's
// input channels. Per output row, the kh repeated gradient rows it reads sit in a per-thread ring (each row is
// repeated once, not kh times); per vector of channels, one kernel row's weights stay in registers while a
// window of J output pixels slides along the gradient row, each gradient vector loaded once for all its taps.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "repeat_row.h"
#include "vec.h"

namespace {

using convzoo::kLanes, convzoo::kVectorRegisters, convzoo::load, convzoo::Vec;

struct Geometry {
  int64_t N, H, W, C, Ho, Wo, O, M, kh, ph, pw, dh;  // ph, pw: the correlation's padding, dh*(kh-1) - conv's
};

// acc[jj] += w[b] * e[p] for p = jj + b over one repeated gradient row e (at pixel j0 - pw). Inside the row,
// the loads walk a pointer with no checks (the compiler did not separate the two cases by itself: it kept a
// bounds check and an index product per load); at its ends, positions outside [lo, hi) read as zeros.
template <typename T, int KW, int J, bool kInside>
inline void slide(const T* e, const Vec<T>* w, Vec<T>* acc, int64_t C, int64_t lo, int64_t hi) {
#pragma GCC unroll 64
  for (int p = 0; p < J + KW - 1; ++p) {
    if constexpr (!kInside) {
      if (p < lo || p >= hi) continue;
    }
    const Vec<T> xv = load(e + p * C);
#pragma GCC unroll 64
    for (int b = 0; b < KW; ++b) {
      const int jj = p - b;
      if (jj >= 0 && jj < J) acc[jj] += w[b] * xv;
    }
  }
}

// Output row of gx, pixels [j0, j0 + J) (those below W stored), channels [c0, c0 + L): the sum over kernel
// rows a, outputs m and taps b of wf[a, b, m, c] * E_a[m, j0 - pw + jj + b, c], where E_a (M, Wo, C) is the
// repeated gradient row that kernel row a reads (null: outside the gradient, zeros).
template <typename T, int KW, int J>
void window(const T* const* rows, const T* wf, T* out, const Geometry& q, int64_t j0, int64_t c0) {
  using V = Vec<T>;
  const int64_t C = q.C, x0 = j0 - q.pw;
  V acc[J];
#pragma GCC unroll 64
  for (int jj = 0; jj < J; ++jj) acc[jj] = V{};
  const bool inside = x0 >= 0 && x0 + J + KW - 1 <= q.Wo;
  for (int64_t a = 0; a < q.kh; ++a) {
    if (rows[a] == nullptr) continue;
    for (int64_t m = 0; m < q.M; ++m) {
      const T* e = rows[a] + m * q.Wo * C + x0 * C + c0;
      V w[KW];
#pragma GCC unroll 64
      for (int b = 0; b < KW; ++b) w[b] = load(wf + ((a * KW + b) * q.M + m) * C + c0);
      if (inside)
        slide<T, KW, J, true>(e, w, acc, C, 0, J + KW - 1);
      else
        slide<T, KW, J, false>(e, w, acc, C, -x0, q.Wo - x0);
    }
  }
  const int64_t jn = std::min<int64_t>(J, q.W - j0);
  for (int64_t jj = 0; jj < jn; ++jj) convzoo::store(out + (j0 + jj) * C + c0, acc[jj]);
}

template <typename T, int KW>
void dgrad_impl(const T* gy, const T* wf, T* gx, const Geometry& q) {
  // Pixels per window: what the J accumulators, one kernel row of weights and one input vector leave.
  constexpr int J = std::clamp(kVectorRegisters - KW - 2, 1, 16);
  const int64_t cg = q.C / (q.O / q.M);
  const convzoo::RepeatFn<T> repeat = convzoo::repeat_function<T>(cg);
  const int64_t slot = q.M * q.Wo * q.C, slots = q.kh * q.dh;  // rows y' = y - ph + a*dh: distinct mod kh*dh
  at::parallel_for(0, q.N * q.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> ring(slots * slot);
    std::vector<int64_t> held(slots, -1);  // the gradient row (n * Ho + y') each slot holds
    std::vector<const T*> rows(q.kh);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / q.H, y = r % q.H;
      for (int64_t a = 0; a < q.kh; ++a) {
        const int64_t yy = y - q.ph + a * q.dh;
        rows[a] = nullptr;
        if (yy < 0 || yy >= q.Ho) continue;
        const int64_t key = n * q.Ho + yy, s = yy % slots;
        T* e = ring.data() + s * slot;
        if (held[s] != key) {
          for (int64_t m = 0; m < q.M; ++m)
            repeat(gy + key * q.Wo * q.O, e + m * q.Wo * q.C, q.Wo, q.O, q.M, m, cg);
          held[s] = key;
        }
        rows[a] = e;
      }
      T* orow = gx + r * q.W * q.C;
      for (int64_t j0 = 0; j0 < q.W; j0 += J)
        for (int64_t c0 = 0; c0 < q.C; c0 += kLanes<T>) window<T, KW, J>(rows.data(), wf, orow, q, j0, c0);
    }
  });
}

template <typename T>
using DgradFn = void (*)(const T*, const T*, T*, const Geometry&);

// The kernel widths built (grouped_kernels.DGRAD_WIDTHS).
template <typename T>
DgradFn<T> dgrad_function(int64_t kw) {
  switch (kw) {
    case 3: return dgrad_impl<T, 3>;
    case 5: return dgrad_impl<T, 5>;
    case 7: return dgrad_impl<T, 7>;
    case 9: return dgrad_impl<T, 9>;
    case 11: return dgrad_impl<T, 11>;
    default: return nullptr;
  }
}

}  // namespace

// grad_out (N, Ho, Wo, O) NHWC contiguous and wf (kh, kw, M, C) contiguous, the kernel flipped (wf[a, b, m, g*cg + ci]
// = w[g*M + m, ci, kh-1-a, kw-1-b]) -> gx (N, H, W, C): the input gradient of the stride-1 grouped conv with
// padding (ph, pw), height dilation dh, width dilation 1.
at::Tensor grouped_dgrad(const at::Tensor& grad_out, const at::Tensor& wf, std::vector<int64_t> input_size,
                         std::vector<int64_t> padding, int64_t dilation_h, int64_t groups) {
  TORCH_CHECK(grad_out.dim() == 4 && wf.dim() == 4 && grad_out.is_contiguous() && wf.is_contiguous() &&
                  !grad_out.is_cuda(),
              "grouped_dgrad: NHWC contiguous CPU gradient and (kh, kw, M, C) weights expected");
  const int64_t N = grad_out.size(0), Ho = grad_out.size(1), Wo = grad_out.size(2), O = grad_out.size(3);
  const int64_t kh = wf.size(0), kw = wf.size(1), M = wf.size(2), C = wf.size(3);
  const int64_t H = input_size[0], W = input_size[1];
  TORCH_CHECK(grad_out.scalar_type() == wf.scalar_type() && groups >= 1 && O == groups * M && C % groups == 0,
              "grouped_dgrad: one dtype, grad channels = groups * M, input channels a multiple of groups");
  TORCH_CHECK(dgrad_function<float>(kw) != nullptr, "grouped_dgrad: kernel width not built");
  TORCH_CHECK(Ho == H + 2 * padding[0] - dilation_h * (kh - 1) && Wo == W + 2 * padding[1] - (kw - 1),
              "grouped_dgrad: gradient size does not match the input size, kernel and padding");
  const int64_t ph = dilation_h * (kh - 1) - padding[0], pw = kw - 1 - padding[1];
  TORCH_CHECK(ph >= 0 && pw >= 0, "grouped_dgrad: padding beyond the kernel's reach");
  Geometry q{N, H, W, C, Ho, Wo, O, M, kh, ph, pw, dilation_h};
  auto gx = at::empty({N, H, W, C}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "grouped_dgrad", [&] {
    TORCH_CHECK(C % kLanes<scalar_t> == 0, "grouped_dgrad: channels must fill whole vectors");
    dgrad_function<scalar_t>(kw)(grad_out.data_ptr<scalar_t>(), wf.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), q);
  });
  return gx;
}
