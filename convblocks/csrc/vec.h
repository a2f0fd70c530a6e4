// Vectors of channels for convzoo's CPU kernels: GCC/Clang vector types, which the compiler keeps in registers
// (arrays of scalars under `omp simd` were kept in memory: 3x slower). 64 bytes where AVX-512 gives 32 vector
// registers, else 32 bytes (AVX2: 16 registers).
#pragma once

#include <cstdint>

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

}  // namespace convzoo
