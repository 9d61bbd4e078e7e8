// Launch configuration computed without device-property queries, and launch error checks.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_GPU_LAUNCH_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_GPU_LAUNCH_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

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

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_GPU_LAUNCH_H_
