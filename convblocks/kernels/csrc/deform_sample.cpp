// Fused bilinear sampling for deformable convolution on CPU, channels-last.
//
// The input is NHWC, so the four neighbours of a sampling point are four contiguous channel vectors:
// one set of bilinear weights per (sample, tap, offset group), then a vectorised loop over channels.
// Columns are (N, H_out*W_out, groups, kh*kw, C/groups), ready for one GEMM per conv group.
// Semantics (borders, gradients, modulation) follow torchvision's deform_conv2d kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Geometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
};

// Bilinear corners of one sampling point: weights (zero for corners outside the image) and row indices
// into the NHWC image (-1 for a corner outside: the caller substitutes a zero or scratch row). ``inside``
// is torchvision's test for a sampled value; its offset gradient uses the valid corners even outside it
// (at exactly -1 one corner is still in the image).
template <typename T>
struct Corners {
  T w[4];
  int64_t idx[4];
  T ly, lx, hy, hx;
  bool inside;
};

template <typename T>
inline Corners<T> corners(T y, T x, int64_t H, int64_t W) {
  Corners<T> c;
  c.inside = !(y <= -1 || y >= H || x <= -1 || x >= W);
  if (!(y > -2 && y < H + 1 && x > -2 && x < W + 1)) {  // no corner in the image (NaN included)
    for (int i = 0; i < 4; ++i) { c.w[i] = 0; c.idx[i] = -1; }
    c.ly = c.lx = c.hy = c.hx = 0;
    return c;
  }
  const int64_t y0 = static_cast<int64_t>(std::floor(y)), x0 = static_cast<int64_t>(std::floor(x));
  c.ly = y - y0; c.lx = x - x0; c.hy = 1 - c.ly; c.hx = 1 - c.lx;
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1}, xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const T ws[4] = {c.hy * c.hx, c.hy * c.lx, c.ly * c.hx, c.ly * c.lx};
  for (int i = 0; i < 4; ++i) {
    const bool ok = ys[i] >= 0 && ys[i] < H && xs[i] >= 0 && xs[i] < W;
    c.w[i] = ok ? ws[i] : T(0);
    c.idx[i] = ok ? ys[i] * W + xs[i] : -1;
  }
  return c;
}

void check_inputs(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& mask) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "deform_sample: x must be contiguous NHWC on CPU");
  TORCH_CHECK(offset.is_contiguous() && offset.scalar_type() == x.scalar_type(), "deform_sample: offset must be contiguous, x's dtype");
  TORCH_CHECK(!mask.defined() || mask.numel() == 0 || (mask.is_contiguous() && mask.scalar_type() == x.scalar_type()),
              "deform_sample: mask must be contiguous, x's dtype");
}

// Calls fn(n, ho, wo, dg, k, y, x, m) for every sampling point of rows [r0, r1) of N*H_out.
template <typename T, typename F>
inline void for_points(int64_t r0, int64_t r1, const Geometry& g, int64_t Ho, int64_t Wo, int64_t G,
                       const T* off, const T* msk, F fn) {
  const int64_t K = g.kh * g.kw, L = Ho * Wo;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / Ho, ho = r % Ho;
    for (int64_t wo = 0; wo < Wo; ++wo) {
      const int64_t l = ho * Wo + wo;
      for (int64_t dg = 0; dg < G; ++dg) {
        for (int64_t k = 0; k < K; ++k) {
          const int64_t i = k / g.kw, j = k % g.kw;
          const int64_t oc = (n * G + dg) * K + k;  // offset channel pair / mask channel
          const T dy = off[(2 * oc) * L + l], dx = off[(2 * oc + 1) * L + l];
          const T m = msk ? msk[oc * L + l] : T(1);
          const T y = static_cast<T>(ho * g.sh - g.ph + i * g.dh) + dy;
          const T x = static_cast<T>(wo * g.sw - g.pw + j * g.dw) + dx;
          fn(n, l, dg, k, oc, y, x, m);
        }
      }
    }
  }
}

template <typename T>
void sample_impl(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& mask, at::Tensor& cols,
                 const Geometry& g) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = offset.size(2), Wo = offset.size(3), K = g.kh * g.kw, L = Ho * Wo;
  const int64_t G = offset.size(1) / (2 * K), Cd = C / G, Cg = C / g.groups;
  const T* xp = x.data_ptr<T>();
  const T* off = offset.data_ptr<T>();
  const T* msk = (mask.defined() && mask.numel()) ? mask.data_ptr<T>() : nullptr;
  T* cp = cols.data_ptr<T>();
  at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) {
    std::vector<T> zeros(C, T(0));
    for_points<T>(r0, r1, g, Ho, Wo, G, off, msk, [&](int64_t n, int64_t l, int64_t dg, int64_t k, int64_t,
                                                      T y, T x_, T m) {
      T* colrow = cp + (n * L + l) * K * C;
      const Corners<T> cr = corners<T>(y, x_, H, W);
      const T* img = xp + n * H * W * C;
      const T* p[4];
      T w[4];
      for (int q = 0; q < 4; ++q) {
        p[q] = (cr.inside && cr.idx[q] >= 0) ? img + cr.idx[q] * C : zeros.data();
        w[q] = cr.inside ? cr.w[q] * m : T(0);
      }
      for (int64_t c = dg * Cd, c1 = (dg + 1) * Cd; c < c1;) {  // split at conv-group boundaries
        const int64_t gi = c / Cg, ce = std::min(c1, (gi + 1) * Cg);
        T* dst = colrow + gi * K * Cg + k * Cg + (c - gi * Cg);
        const T *a = p[0] + c, *b = p[1] + c, *d = p[2] + c, *e = p[3] + c;
        const int64_t len = ce - c;
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) dst[t] = w[0] * a[t] + w[1] * b[t] + w[2] * d[t] + w[3] * e[t];
        c = ce;
      }
    });
  });
}

template <typename T>
void backward_impl(const at::Tensor& gcols, const at::Tensor& x, const at::Tensor& offset, const at::Tensor& mask,
                   at::Tensor& gx, at::Tensor& goff, at::Tensor& gmask, const Geometry& g) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = offset.size(2), Wo = offset.size(3), K = g.kh * g.kw, L = Ho * Wo;
  const int64_t G = offset.size(1) / (2 * K), Cd = C / G, Cg = C / g.groups;
  const T* gcp = gcols.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const T* off = offset.data_ptr<T>();
  const T* msk = (mask.defined() && mask.numel()) ? mask.data_ptr<T>() : nullptr;
  T* gxp = gx.defined() ? gx.data_ptr<T>() : nullptr;
  T* gop = goff.defined() ? goff.data_ptr<T>() : nullptr;
  T* gmp = gmask.defined() ? gmask.data_ptr<T>() : nullptr;
  // Samples run in parallel, each scattering into its own image of gx; rows of one sample stay serial.
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<T> zeros(C, T(0)), scratch(C, T(0));
    for_points<T>(n0 * Ho, n1 * Ho, g, Ho, Wo, G, off, msk, [&](int64_t n, int64_t l, int64_t dg, int64_t k,
                                                                  int64_t oc, T y, T x_, T m) {
      const Corners<T> cr = corners<T>(y, x_, H, W);
      if (cr.idx[0] < 0 && cr.idx[1] < 0 && cr.idx[2] < 0 && cr.idx[3] < 0) {  // nothing to read or write
        if (gop) { gop[(2 * oc) * L + l] = 0; gop[(2 * oc + 1) * L + l] = 0; }
        if (gmp) gmp[oc * L + l] = 0;
        return;
      }
      const T* img = xp + n * H * W * C;
      T* gimg = gxp ? gxp + n * H * W * C : nullptr;
      const T* p[4];
      T* gp[4];
      T wv[4], wm[4], wy[4], wx[4];
      const T sy[4] = {-cr.hx, -cr.lx, cr.hx, cr.lx}, sx[4] = {-cr.hy, cr.hy, -cr.ly, cr.ly};
      for (int q = 0; q < 4; ++q) {
        const bool ok = cr.idx[q] >= 0;
        p[q] = ok ? img + cr.idx[q] * C : zeros.data();
        gp[q] = (ok && gimg && cr.inside) ? gimg + cr.idx[q] * C : scratch.data();
        wv[q] = cr.inside ? cr.w[q] : T(0);  // the value (and so input and mask gradients) only inside
        wm[q] = wv[q] * m;
        wy[q] = ok ? sy[q] : T(0);
        wx[q] = ok ? sx[q] : T(0);
      }
      const T* gcrow = gcp + (n * L + l) * K * C;
      T acc_v = 0, acc_y = 0, acc_x = 0;
      for (int64_t c = dg * Cd, c1 = (dg + 1) * Cd; c < c1;) {
        const int64_t gi = c / Cg, ce = std::min(c1, (gi + 1) * Cg);
        const T* gc = gcrow + gi * K * Cg + k * Cg + (c - gi * Cg);
        const T *a = p[0] + c, *b = p[1] + c, *d = p[2] + c, *e = p[3] + c;
        T *ga = gp[0] + c, *gb = gp[1] + c, *gd = gp[2] + c, *ge = gp[3] + c;
        const int64_t len = ce - c;
        T sv = 0, s_y = 0, s_x = 0;
#pragma omp simd reduction(+ : sv, s_y, s_x)
        for (int64_t t = 0; t < len; ++t) {
          const T gv = gc[t];
          sv += gv * (wv[0] * a[t] + wv[1] * b[t] + wv[2] * d[t] + wv[3] * e[t]);
          s_y += gv * (wy[0] * a[t] + wy[1] * b[t] + wy[2] * d[t] + wy[3] * e[t]);
          s_x += gv * (wx[0] * a[t] + wx[1] * b[t] + wx[2] * d[t] + wx[3] * e[t]);
          ga[t] += wm[0] * gv; gb[t] += wm[1] * gv; gd[t] += wm[2] * gv; ge[t] += wm[3] * gv;  // scratch if unused
        }
        acc_v += sv; acc_y += s_y; acc_x += s_x;
        c = ce;
      }
      if (gop) { gop[(2 * oc) * L + l] = m * acc_y; gop[(2 * oc + 1) * L + l] = m * acc_x; }
      if (gmp) gmp[oc * L + l] = acc_v;
    });
  });
}

Geometry geometry(std::vector<int64_t> kernel, std::vector<int64_t> stride, std::vector<int64_t> padding,
                  std::vector<int64_t> dilation, int64_t groups) {
  return Geometry{kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups};
}

}  // namespace

// x (N, H, W, C) NHWC; offset (N, 2*G*K, Ho, Wo); mask (N, G*K, Ho, Wo) or empty -> cols (N, Ho*Wo, K*C),
// laid out (groups, K, C/groups) along the last axis.
at::Tensor sample_columns(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& mask,
                          std::vector<int64_t> kernel, std::vector<int64_t> stride, std::vector<int64_t> padding,
                          std::vector<int64_t> dilation, int64_t groups) {
  check_inputs(x, offset, mask);
  const Geometry g = geometry(kernel, stride, padding, dilation, groups);
  auto cols = at::empty({x.size(0), offset.size(2) * offset.size(3), g.kh * g.kw * x.size(3)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deform_sample_columns", [&] { sample_impl<scalar_t>(x, offset, mask, cols, g); });
  return cols;
}

// Gradients of sample_columns given grad cols: (grad x NHWC, grad offset, grad mask); undefined where not asked.
std::vector<at::Tensor> sample_columns_backward(const at::Tensor& gcols, const at::Tensor& x, const at::Tensor& offset,
                                                const at::Tensor& mask, std::vector<int64_t> kernel,
                                                std::vector<int64_t> stride, std::vector<int64_t> padding,
                                                std::vector<int64_t> dilation, int64_t groups, bool need_x,
                                                bool need_offset, bool need_mask) {
  check_inputs(x, offset, mask);
  TORCH_CHECK(gcols.is_contiguous() && gcols.scalar_type() == x.scalar_type(), "deform_sample: grad cols must be contiguous, x's dtype");
  const Geometry g = geometry(kernel, stride, padding, dilation, groups);
  const bool has_mask = mask.defined() && mask.numel();
  at::Tensor gx = need_x ? at::zeros_like(x) : at::Tensor();
  at::Tensor goff = need_offset ? at::empty_like(offset) : at::Tensor();
  at::Tensor gmask = (need_mask && has_mask) ? at::empty_like(mask) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deform_sample_columns_backward", [&] {
    backward_impl<scalar_t>(gcols, x, offset, mask, gx, goff, gmask, g);
  });
  return {gx, goff, gmask};
}
