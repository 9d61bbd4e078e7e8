// CUDA functors of the fused bias + activation ops (float32 and float16, math in float).
// Only the stream of the Eigen GPU device is used; launch sizes are computed here (see
// device.h for why TF's and Eigen's device-property helpers are avoided).
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "custom_ops/cc/kernels/fused_bias_act.h"
#include "custom_ops/cc/kernels/gpu_launch.h"

namespace tf_distill {
namespace {

// No __restrict__: the op may run in place (y aliases x, dx aliases dy).
template <typename T>
__global__ void FusedBiasActKernel(FusedBiasActParams p, const T* x, const T* b,
                                   T* y) {
  const int size = static_cast<int>(p.size);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < size; i += blockDim.x * gridDim.x) {
    float v = static_cast<float>(x[i]);
    if (p.has_bias) v += static_cast<float>(b[i % p.channels]);
    if (!p.linear) v = v > 0.0f ? v : v * p.alpha;
    y[i] = static_cast<T>(v * p.gain);
  }
}

template <typename T>
__global__ void FusedBiasActGradKernel(FusedBiasActParams p, const T* dy, const T* y,
                                       T* dx) {
  const int size = static_cast<int>(p.size);
  // Same arithmetic as the CPU kernel: dx = dy * (positive ? gain : gain * alpha).
  const float neg_slope = p.linear ? p.gain : p.gain * p.alpha;
  const float sign = p.gain >= 0.0f ? 1.0f : -1.0f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < size; i += blockDim.x * gridDim.x) {
    const float s = sign * static_cast<float>(y[i]) > 0.0f ? p.gain : neg_slope;
    dx[i] = static_cast<T>(static_cast<float>(dy[i]) * s);
  }
}

}  // namespace

namespace functor {

#define TF_DISTILL_DEFINE_GPU(T)                                                                                 \
  template <>                                                                                                    \
  std::string FusedBiasActFunctor<Eigen::GpuDevice, T>::operator()(                                              \
      const Eigen::GpuDevice& d, const FusedBiasActParams& p, const T* x, const T* b, T* y) {                    \
    const GpuLaunch l = GpuLaunch::ForElements(p.size);                                                          \
    FusedBiasActKernel<T><<<l.blocks, l.threads, 0, d.stream()>>>(p, x, b, y);                                   \
    return CheckLaunch("FusedBiasActKernel");                                                                    \
  }                                                                                                              \
  template <>                                                                                                    \
  std::string FusedBiasActGradFunctor<Eigen::GpuDevice, T>::operator()(                                          \
      const Eigen::GpuDevice& d, const FusedBiasActParams& p, const T* dy, const T* y, T* dx) {                  \
    const GpuLaunch l = GpuLaunch::ForElements(p.size);                                                          \
    FusedBiasActGradKernel<T><<<l.blocks, l.threads, 0, d.stream()>>>(p, dy, y, dx);                             \
    return CheckLaunch("FusedBiasActGradKernel");                                                                \
  }

TF_DISTILL_DEFINE_GPU(float)
TF_DISTILL_DEFINE_GPU(Eigen::half)
#undef TF_DISTILL_DEFINE_GPU

}  // namespace functor
}  // namespace tf_distill

#endif  // GOOGLE_CUDA
