// Sum over each group of contiguous channels, channels-last, on CPU: the second half of a grouped conv
// phrased as depthwise convs (convblocks/grouped_conv.py), and its gradient, each value repeated over its
// group. PyTorch's reduction over a short innermost dimension, and its copy of an expanded one, run 2-10x
// slower than a memory copy; these run at about copy speed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace {

// out[p, g] = sum over c < CG of z[p, g*CG + c]; CG fixed so the compiler unrolls and vectorises it.
template <typename T, int CG>
void sum_fixed(const T* z, T* out, int64_t pixels, int64_t groups) {
  at::parallel_for(0, pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* zp = z + p * groups * CG;
      T* op = out + p * groups;
      for (int64_t g = 0; g < groups; ++g) {
        T s = 0;
#pragma GCC unroll 16
        for (int c = 0; c < CG; ++c) s += zp[g * CG + c];
        op[g] = s;
      }
    }
  });
}

// Any group size: accumulate channel by channel into the pixel's group sums.
template <typename T>
void sum_any(const T* z, T* out, int64_t pixels, int64_t groups, int64_t cg) {
  at::parallel_for(0, pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* zp = z + p * groups * cg;
      T* op = out + p * groups;
      for (int64_t g = 0; g < groups; ++g) op[g] = zp[g * cg];
      for (int64_t c = 1; c < cg; ++c)
        for (int64_t g = 0; g < groups; ++g) op[g] += zp[g * cg + c];
    }
  });
}

// out[p, g*cg + c] = y[p, g]: each group's value repeated over its channels. CG > 0 fixes the group size
// at compile time so the stores vectorise; CG == 0 reads it from cg.
template <typename T, int CG>
void repeat_groups(const T* y, T* out, int64_t pixels, int64_t groups, int64_t cg) {
  if (CG > 0) cg = CG;
  at::parallel_for(0, pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* yp = y + p * groups;
      T* op = out + p * groups * cg;
      for (int64_t g = 0; g < groups; ++g) {
        if (CG > 0) {
#pragma GCC unroll 16
          for (int c = 0; c < CG; ++c) op[g * CG + c] = yp[g];
        } else {
          for (int64_t c = 0; c < cg; ++c) op[g * cg + c] = yp[g];
        }
      }
    }
  });
}

}  // namespace

// z (..., C) contiguous, C = groups * cg -> (..., groups): out[..., g] = sum of z[..., g*cg : (g+1)*cg].
at::Tensor group_sum(const at::Tensor& z, int64_t groups) {
  TORCH_CHECK(z.dim() >= 1 && z.is_contiguous() && !z.is_cuda(), "group_sum: a contiguous CPU tensor expected");
  TORCH_CHECK(groups >= 1 && z.size(-1) % groups == 0, "group_sum: channels not a multiple of groups");
  const int64_t cg = z.size(-1) / groups, pixels = z.numel() / std::max<int64_t>(z.size(-1), 1);
  auto sizes = z.sizes().vec();
  sizes.back() = groups;
  auto out = at::empty(sizes, z.options());
  if (z.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "group_sum", [&] {
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    switch (cg) {
      case 2: sum_fixed<scalar_t, 2>(zp, op, pixels, groups); break;
      case 4: sum_fixed<scalar_t, 4>(zp, op, pixels, groups); break;
      case 8: sum_fixed<scalar_t, 8>(zp, op, pixels, groups); break;
      case 16: sum_fixed<scalar_t, 16>(zp, op, pixels, groups); break;
      default: sum_any<scalar_t>(zp, op, pixels, groups, cg);
    }
  });
  return out;
}

// y (..., G) contiguous -> (..., G * group_size): out[..., g*group_size + c] = y[..., g].
at::Tensor group_repeat(const at::Tensor& y, int64_t group_size) {
  TORCH_CHECK(y.dim() >= 1 && y.is_contiguous() && !y.is_cuda(), "group_repeat: a contiguous CPU tensor expected");
  TORCH_CHECK(group_size >= 1, "group_repeat: group_size must be >= 1");
  const int64_t groups = y.size(-1), pixels = y.numel() / std::max<int64_t>(groups, 1);
  auto sizes = y.sizes().vec();
  sizes.back() = groups * group_size;
  auto out = at::empty(sizes, y.options());
  if (y.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "group_repeat", [&] {
    const scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    switch (group_size) {
      case 2: repeat_groups<scalar_t, 2>(yp, op, pixels, groups, group_size); break;
      case 4: repeat_groups<scalar_t, 4>(yp, op, pixels, groups, group_size); break;
      case 8: repeat_groups<scalar_t, 8>(yp, op, pixels, groups, group_size); break;
      case 16: repeat_groups<scalar_t, 16>(yp, op, pixels, groups, group_size); break;
      default: repeat_groups<scalar_t, 0>(yp, op, pixels, groups, group_size);
    }
  });
  return out;
}
