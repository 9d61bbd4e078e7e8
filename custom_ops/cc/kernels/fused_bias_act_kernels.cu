// The CUDA kernels of fused_bias_act (fused_bias_act.h), float32 and float16 with the math in
// float. No TensorFlow header: the ops pass their stream, custom_ops/check/ runs them standalone.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "custom_ops/cc/kernels/fused_bias_act.h"
#include "custom_ops/cc/kernels/gpu_launch.h"

namespace tf_distill {
namespace {

// No __restrict__: the op may run in place (y aliases x, dx aliases dy).
template <typename T>
__global__ void FusedBiasActKernel(FusedBiasActParams p, const T* x, const T* b, T* y) {
  const int size = static_cast<int>(p.size);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < size; i += blockDim.x * gridDim.x) {
    float v = static_cast<float>(x[i]);
    if (p.has_bias) v += static_cast<float>(b[i % p.channels]);
    if (!p.linear) v = v > 0.0f ? v : v * p.alpha;
    y[i] = static_cast<T>(v * p.gain);
  }
}

template <typename T>
__global__ void FusedBiasActGradKernel(FusedBiasActParams p, const T* dy, const T* y, T* dx) {
  const int size = static_cast<int>(p.size);
  // Same arithmetic as the CPU kernel: dx = dy * (positive ? gain : gain * alpha).
  const float neg_slope = p.linear ? p.gain : p.gain * p.alpha;
  const float sign = p.gain >= 0.0f ? 1.0f : -1.0f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < size; i += blockDim.x * gridDim.x) {
    const float s = sign * static_cast<float>(y[i]) > 0.0f ? p.gain : neg_slope;
    dx[i] = static_cast<T>(static_cast<float>(dy[i]) * s);
  }
}

// dx as above plus per-channel sums of dx: block b takes rows [b*rows/B, (b+1)*rows/B), thread
// t the channels t, t + blockDim.x, ... (neighbouring threads read neighbouring channels), and
// each (block, channel) partial sum is added to db_acc with one atomicAdd.
template <typename T>
__global__ void FusedBiasActGradBiasKernel(FusedBiasActParams p, int rows, const T* dy, const T* y, T* dx,
                                           float* db_acc) {
  const float neg_slope = p.linear ? p.gain : p.gain * p.alpha;
  const float sign = p.gain >= 0.0f ? 1.0f : -1.0f;
  const int channels = p.channels;
  const int r0 = static_cast<int>(static_cast<long long>(blockIdx.x) * rows / gridDim.x);
  const int r1 = static_cast<int>(static_cast<long long>(blockIdx.x + 1) * rows / gridDim.x);
  for (int c = threadIdx.x; c < channels; c += blockDim.x) {
    float sum = 0.0f;
    for (int r = r0; r < r1; ++r) {
      const int i = r * channels + c;
      const float s = sign * static_cast<float>(y[i]) > 0.0f ? p.gain : neg_slope;
      const T g = static_cast<T>(static_cast<float>(dy[i]) * s);
      dx[i] = g;
      sum += static_cast<float>(g);
    }
    if (r1 > r0) atomicAdd(db_acc + c, sum);
  }
}

template <typename T>
__global__ void CastKernel(int n, const float* in, T* out) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    out[i] = static_cast<T>(in[i]);
  }
}

template <typename T>
std::string LaunchForward(cudaStream_t stream, const FusedBiasActParams& p, const T* x, const T* b, T* y) {
  const GpuLaunch l = GpuLaunch::ForElements(p.size);
  FusedBiasActKernel<T><<<l.blocks, l.threads, 0, stream>>>(p, x, b, y);
  return CheckLaunch("FusedBiasActKernel");
}

template <typename T>
std::string LaunchGrad(cudaStream_t stream, const FusedBiasActParams& p, const T* dy, const T* y, T* dx,
                       float* db_acc, T* db) {
  if (!p.has_bias) {
    const GpuLaunch l = GpuLaunch::ForElements(p.size);
    FusedBiasActGradKernel<T><<<l.blocks, l.threads, 0, stream>>>(p, dy, y, dx);
    return CheckLaunch("FusedBiasActGradKernel");
  }
  const cudaError_t err = cudaMemsetAsync(db_acc, 0, sizeof(float) * p.channels, stream);
  if (err != cudaSuccess) return std::string("cudaMemsetAsync failed: ") + cudaGetErrorString(err);
  const int rows = static_cast<int>(p.size / p.channels);
  if (rows > 0) {
    // Enough blocks to fill the GPU, each with a run of rows long enough to amortise its atomics.
    const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rows, 4096)));
    const int threads = static_cast<int>(std::min<int64_t>(256, (p.channels + 31) / 32 * 32));
    FusedBiasActGradBiasKernel<T><<<blocks, threads, 0, stream>>>(p, rows, dy, y, dx, db_acc);
    const std::string launch = CheckLaunch("FusedBiasActGradBiasKernel");
    if (!launch.empty()) return launch;
  }
  const GpuLaunch l = GpuLaunch::ForElements(p.channels);
  CastKernel<T><<<l.blocks, l.threads, 0, stream>>>(p.channels, db_acc, db);
  return CheckLaunch("CastKernel");
}

}  // namespace

std::string FusedBiasActGpu(cudaStream_t stream, const FusedBiasActParams& p, const float* x, const float* b,
                            float* y) {
  return LaunchForward<float>(stream, p, x, b, y);
}

std::string FusedBiasActGpu(cudaStream_t stream, const FusedBiasActParams& p, const Half* x, const Half* b, Half* y) {
  return LaunchForward<__half>(stream, p, AsCudaHalf(x), AsCudaHalf(b), AsCudaHalf(y));
}

std::string FusedBiasActGradGpu(cudaStream_t stream, const FusedBiasActParams& p, const float* dy, const float* y,
                                float* dx, float* db_acc, float* db) {
  return LaunchGrad<float>(stream, p, dy, y, dx, db_acc, db);
}

std::string FusedBiasActGradGpu(cudaStream_t stream, const FusedBiasActParams& p, const Half* dy, const Half* y,
                                Half* dx, float* db_acc, Half* db) {
  return LaunchGrad<__half>(stream, p, AsCudaHalf(dy), AsCudaHalf(y), AsCudaHalf(dx), db_acc, AsCudaHalf(db));
}

}  // namespace tf_distill
