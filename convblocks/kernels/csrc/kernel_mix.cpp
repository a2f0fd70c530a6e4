// Both gradients of dynamic conv's per-sample kernels, out = pi @ bank, in one pass, on CPU (the forward is BLAS's).
// The shapes are extreme for a GEMM (N x K with K = 4 against K x P with P = C_out * C_in * k * k, millions):
// the work is memory-bound, and BLAS reads the per-sample gradient once per product. Here each chunk of
// columns stays in L1 while both gradients are taken from it, so it is read from memory once.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "vec.h"

namespace {

constexpr int64_t kChunk = 1024;  // columns per task: their bank gradient and one gradient row fit in L1

// One chunk of columns for KK = K kernels (KK > 0: unrolled, the K dot products independent vector accumulators
// held in registers as GCC/Clang vector types, the bank gradient summed in a local buffer and streamed out
// once, non-temporal; KK == 0: any K, one chain at a time, summed in place).
template <typename T, int KK>
void mix_backward_chunk(const T* g, const T* pi, const T* bank, T* gbank, double* acc, int64_t N, int64_t K,
                        int64_t P, int64_t p0, int64_t len) {
  using convzoo::load, convzoo::store;
  using Vec = convzoo::Vec<T>;
  constexpr int V = convzoo::kLanes<T>;
  if constexpr (KK > 0) {
    alignas(convzoo::kVectorBytes) T local[KK][kChunk];
    for (int k = 0; k < KK; ++k) std::fill_n(local[k], len, T(0));
    for (int64_t n = 0; n < N; ++n) {
      const T* gr = g + n * P + p0;
      Vec dots[KK];
      T w[KK];
      for (int k = 0; k < KK; ++k) {
        dots[k] = Vec{};
        w[k] = pi[n * KK + k];
      }
      int64_t p = 0;
      for (; p + V <= len; p += V) {
        const Vec gv = load(gr + p);
#pragma GCC unroll 8
        for (int k = 0; k < KK; ++k) {
          store(local[k] + p, load(local[k] + p) + w[k] * gv);
          dots[k] += gv * load(bank + k * P + p0 + p);
        }
      }
      for (int k = 0; k < KK; ++k) {
        double s = 0;
        for (int v = 0; v < V; ++v) s += dots[k][v];
        for (int64_t q = p; q < len; ++q) {
          local[k][q] += w[k] * gr[q];
          s += gr[q] * bank[k * P + p0 + q];
        }
        acc[n * KK + k] += s;
      }
    }
    for (int k = 0; k < KK; ++k) {
      T* dst = gbank + k * P + p0;
      int64_t p = 0;
      if (convzoo::aligned(dst))
        for (; p + V <= len; p += V) convzoo::stream(dst + p, load(local[k] + p));
      std::copy(local[k] + p, local[k] + len, dst + p);
    }
  } else {
    for (int64_t k = 0; k < K; ++k) std::fill_n(gbank + k * P + p0, len, T(0));
    for (int64_t n = 0; n < N; ++n) {
      const T* gr = g + n * P + p0;
      for (int64_t k = 0; k < K; ++k) {
        const T wk = pi[n * K + k];
        const T* b = bank + k * P + p0;
        T* gb = gbank + k * P + p0;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t p = 0; p < len; ++p) {
          gb[p] += wk * gr[p];
          dot += gr[p] * b[p];
        }
        acc[n * K + k] += dot;
      }
    }
  }
}

// gbank[k, p] = sum over n of pi[n, k] * g[n, p];  gpi[n, k] = sum over p of g[n, p] * bank[k, p].
template <typename T>
void mix_backward(const T* g, const T* pi, const T* bank, T* gpi, T* gbank, int64_t N, int64_t K, int64_t P) {
  const int64_t threads = at::get_num_threads();
  std::vector<double> partial(threads * N * K, 0.0);  // each thread's sums for gpi
  at::parallel_for(0, (P + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    double* acc = partial.data() + at::get_thread_num() * N * K;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p0 = t * kChunk, len = std::min(kChunk, P - p0);
      switch (K) {
        case 2: mix_backward_chunk<T, 2>(g, pi, bank, gbank, acc, N, K, P, p0, len); break;
        case 4: mix_backward_chunk<T, 4>(g, pi, bank, gbank, acc, N, K, P, p0, len); break;
        case 8: mix_backward_chunk<T, 8>(g, pi, bank, gbank, acc, N, K, P, p0, len); break;
        default: mix_backward_chunk<T, 0>(g, pi, bank, gbank, acc, N, K, P, p0, len);
      }
    }
    convzoo::stream_fence();
  });
  for (int64_t i = 0; i < N * K; ++i) {
    double s = 0;
    for (int64_t th = 0; th < threads; ++th) s += partial[th * N * K + i];
    gpi[i] = static_cast<T>(s);
  }
}

void check(const at::Tensor& pi, const at::Tensor& bank) {
  TORCH_CHECK(pi.dim() == 2 && bank.dim() == 2 && pi.size(1) == bank.size(0), "mix_kernels: pi (N, K), bank (K, P)");
  TORCH_CHECK(pi.is_contiguous() && bank.is_contiguous() && !pi.is_cuda() && !bank.is_cuda(),
              "mix_kernels: contiguous CPU tensors expected");
  TORCH_CHECK(pi.scalar_type() == bank.scalar_type(), "mix_kernels: pi and bank of one dtype");
}

}  // namespace

// grad (N, P), pi (N, K), bank (K, P) -> (grad of pi (N, K), grad of bank (K, P)).
std::vector<at::Tensor> mix_kernels_backward(const at::Tensor& grad, const at::Tensor& pi, const at::Tensor& bank) {
  check(pi, bank);
  TORCH_CHECK(grad.is_contiguous() && grad.size(0) == pi.size(0) && grad.size(1) == bank.size(1) &&
                  grad.scalar_type() == bank.scalar_type(),
              "mix_kernels_backward: grad (N, P) contiguous, of bank's dtype");
  auto gpi = at::empty_like(pi), gbank = at::empty_like(bank);
  AT_DISPATCH_FLOATING_TYPES(bank.scalar_type(), "mix_kernels_backward", [&] {
    mix_backward<scalar_t>(grad.data_ptr<scalar_t>(), pi.data_ptr<scalar_t>(), bank.data_ptr<scalar_t>(),
                           gpi.data_ptr<scalar_t>(), gbank.data_ptr<scalar_t>(), pi.size(0), pi.size(1),
                           bank.size(1));
  });
  return {gpi, gbank};
}
