// Dynamic conv's per-sample kernels, out = pi @ bank, and both gradients in one pass, on CPU.
// The shapes are extreme for a GEMM (N x K with K = 4 against K x P with P = C_out * C_in * k * k, millions):
// the work is memory-bound, and BLAS reads the per-sample gradient once per product. Here each chunk of
// columns stays in L1 while both gradients are taken from it, so it is read from memory once.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t kChunk = 512;  // columns per task: bank, its gradient and one gradient row fit in L1

// out[n, p] = sum over k of pi[n, k] * bank[k, p].
template <typename T>
void mix_forward(const T* pi, const T* bank, T* out, int64_t N, int64_t K, int64_t P) {
  at::parallel_for(0, (P + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p0 = t * kChunk, len = std::min(kChunk, P - p0);
      for (int64_t n = 0; n < N; ++n) {
        T* o = out + n * P + p0;
        const T w0 = pi[n * K];
        const T* b0 = bank + p0;
#pragma omp simd
        for (int64_t p = 0; p < len; ++p) o[p] = w0 * b0[p];
        for (int64_t k = 1; k < K; ++k) {
          const T w = pi[n * K + k];
          const T* b = bank + k * P + p0;
#pragma omp simd
          for (int64_t p = 0; p < len; ++p) o[p] += w * b[p];
        }
      }
    }
  });
}

// One chunk of columns for KK = K kernels (KK > 0: unrolled, the K dot products independent chains of vector
// accumulators, so the loop is not bound by one reduction's latency; KK == 0: any K, one chain at a time).
template <typename T, int KK>
void mix_backward_chunk(const T* g, const T* pi, const T* bank, T* gbank, double* acc, int64_t N, int64_t K,
                        int64_t P, int64_t p0, int64_t len) {
  constexpr int V = 32 / sizeof(T);  // lanes of one 256-bit register
  for (int64_t k = 0; k < K; ++k) std::fill_n(gbank + k * P + p0, len, T(0));
  for (int64_t n = 0; n < N; ++n) {
    const T* gr = g + n * P + p0;
    if constexpr (KK > 0) {
      T dots[KK][V] = {};
      int64_t p = 0;
      for (; p + V <= len; p += V) {
#pragma GCC unroll 8
        for (int k = 0; k < KK; ++k) {
          const T w = pi[n * KK + k];
          const T* b = bank + k * P + p0 + p;
          T* gb = gbank + k * P + p0 + p;
#pragma omp simd
          for (int v = 0; v < V; ++v) {
            gb[v] += w * gr[p + v];
            dots[k][v] += gr[p + v] * b[v];
          }
        }
      }
      for (; p < len; ++p)
        for (int k = 0; k < KK; ++k) {
          gbank[k * P + p0 + p] += pi[n * KK + k] * gr[p];
          dots[k][0] += gr[p] * bank[k * P + p0 + p];
        }
      for (int k = 0; k < KK; ++k)
        for (int v = 0; v < V; ++v) acc[n * KK + k] += dots[k][v];
    } else {
      for (int64_t k = 0; k < K; ++k) {
        const T w = pi[n * K + k];
        const T* b = bank + k * P + p0;
        T* gb = gbank + k * P + p0;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t p = 0; p < len; ++p) {
          gb[p] += w * gr[p];
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

// pi (N, K), bank (K, P) -> (N, P).
at::Tensor mix_kernels(const at::Tensor& pi, const at::Tensor& bank) {
  check(pi, bank);
  auto out = at::empty({pi.size(0), bank.size(1)}, bank.options());
  AT_DISPATCH_FLOATING_TYPES(bank.scalar_type(), "mix_kernels", [&] {
    mix_forward<scalar_t>(pi.data_ptr<scalar_t>(), bank.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), pi.size(0),
                          pi.size(1), bank.size(1));
  });
  return out;
}

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
