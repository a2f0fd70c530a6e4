// Vectors of channels for convzoo's CPU kernels: GCC/Clang vector types, which the compiler keeps in registers
// (arrays of scalars under `omp simd` were kept in memory: 3x slower). 64 bytes where AVX-512 gives 32 vector
// registers, else 32 bytes (AVX2: 16 registers).
#pragma once

#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

namespace convzoo {

#ifdef __AVX512F__
constexpr int kVectorBytes = 64;
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorBytes = 32;
constexpr int kVectorRegisters = 16;
#endif

template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(kVectorBytes)));
};
template <typename T>
using Vec = typename VecOf<T>::type;  // kLanes<T> values of T
template <typename T>
constexpr int kLanes = kVectorBytes / sizeof(T);

template <typename T>
inline Vec<T> load(const T* p) {  // unaligned
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(Vec<T>));
  return v;
}

template <typename T>
inline void store(T* p, Vec<T> v) {  // unaligned
  __builtin_memcpy(p, &v, sizeof(Vec<T>));
}

// Store a vector without reading its cache line first (non-temporal): for large outputs written once, this
// saves the read of the old contents. p must be aligned to kVectorBytes (see aligned); store() where it is not.
inline void stream(float* p, Vec<float> v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__)
  _mm256_stream_ps(p, (__m256)v);
#else
  store(p, v);
#endif
}

inline void stream(double* p, Vec<double> v) {
#if defined(__AVX512F__)
  _mm512_stream_pd(p, (__m512d)v);
#elif defined(__AVX__)
  _mm256_stream_pd(p, (__m256d)v);
#else
  store(p, v);
#endif
}

// Non-temporal stores are weakly ordered: fence once after the last before other threads read the data.
inline void stream_fence() {
#if defined(__AVX512F__) || defined(__AVX__)
  _mm_sfence();
#endif
}

inline bool aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % kVectorBytes == 0; }

}  // namespace convzoo
