// Launch configuration computed without device-property queries (TF 2.21 wheels are built
// against CUDA 12.5 and nvcc here is 13, whose cudaDeviceProp layouts differ), launch error
// checks, and the view of Half buffers as CUDA's __half. Included by the .cu files only.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_GPU_LAUNCH_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_GPU_LAUNCH_H_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "custom_ops/cc/kernels/half.h"

namespace tf_distill {

struct GpuLaunch {
  int blocks;
  int threads;
  // Grid-stride loops: 256 threads per block and at most 8192 blocks (enough to fill any
  // current GPU several times over); every kernel loops until all elements are done.
  static GpuLaunch ForElements(int64_t n) {
    constexpr int kThreads = 256;
    constexpr int64_t kMaxBlocks = 8192;
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
    return GpuLaunch{static_cast<int>(blocks), kThreads};
  }
};

inline std::string CheckLaunch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return std::string();
  return std::string(kernel) + " launch failed: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
}

// Half and __half are both the 2 bytes of an IEEE binary16 (conversions round to nearest even).
static_assert(sizeof(Half) == sizeof(__half), "Half must have the layout of __half");
inline const __half* AsCudaHalf(const Half* p) { return reinterpret_cast<const __half*>(p); }
inline __half* AsCudaHalf(Half* p) { return reinterpret_cast<__half*>(p); }

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_GPU_LAUNCH_H_
