// The vector instruction set the CPU kernels use, picked once per process at run time, and the
// vector types and streaming stores their hot loops share. The library is compiled for baseline
// x86-64 (so it loads on any CPU) and carries AVX2+FMA and AVX-512 variants of its hot loops as
// target-attributed functions.
//
// TF_DISTILL_MAX_ISA=baseline|avx2|avx512 caps the choice (default: the best the CPU has), so
// the tests can run every variant on one machine and a user can rule one out.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_CPU_ISA_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_CPU_ISA_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace tf_distill {

enum class CpuIsa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline CpuIsa DetectCpuIsa() {
#if defined(__x86_64__) && defined(__GNUC__)
  CpuIsa best = CpuIsa::kBaseline;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = CpuIsa::kAvx2;
  if (best == CpuIsa::kAvx2 && __builtin_cpu_supports("avx512f")) best = CpuIsa::kAvx512;
  CpuIsa cap = CpuIsa::kAvx512;
  if (const char* env = std::getenv("TF_DISTILL_MAX_ISA")) {
    if (std::strcmp(env, "baseline") == 0) cap = CpuIsa::kBaseline;
    if (std::strcmp(env, "avx2") == 0) cap = CpuIsa::kAvx2;
  }
  return static_cast<int>(best) < static_cast<int>(cap) ? best : cap;
#else
  return CpuIsa::kBaseline;
#endif
}

// The instruction set in use (detected on first call).
inline CpuIsa SelectedCpuIsa() {
  static const CpuIsa isa = DetectCpuIsa();
  return isa;
}

inline bool UseAvx2() { return static_cast<int>(SelectedCpuIsa()) >= static_cast<int>(CpuIsa::kAvx2); }
inline bool UseAvx512() { return SelectedCpuIsa() == CpuIsa::kAvx512; }

// float vectors of 4 (SSE), 8 (AVX) and 16 (AVX-512) lanes as GCC/Clang vector extensions: the
// accumulators of a channel block are explicit vectors, so they live in registers.
using Vec4 = float __attribute__((vector_size(16)));
using Vec8 = float __attribute__((vector_size(32)));
using Vec16 = float __attribute__((vector_size(64)));

// Non-temporal store of one aligned float vector (inline asm: the AVX form is only reached
// from the AVX2 entry point, and GCC's builtin would need the target on every caller).
__attribute__((always_inline)) inline void StreamStore(float* dst, Vec4 v) {
  asm volatile("movntps %1, %0" : "=m"(*reinterpret_cast<Vec4*>(dst)) : "x"(v));
}
__attribute__((always_inline)) inline void StreamStore(float* dst, Vec8 v) {
  asm volatile("vmovntps %1, %0" : "=m"(*reinterpret_cast<Vec8*>(dst)) : "x"(v));
}
__attribute__((always_inline)) inline void StreamStore(float* dst, Vec16 v) {
  asm volatile("vmovntps %1, %0" : "=m"(*reinterpret_cast<Vec16*>(dst)) : "v"(v));
}

// Outputs larger than this are written with non-temporal stores (where aligned): they would be
// evicted from a typical last-level cache before anyone reads them, and streaming skips the
// read-for-ownership traffic.
constexpr int64_t kStreamOutputBytes = int64_t{16} << 20;

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_CPU_ISA_H_
