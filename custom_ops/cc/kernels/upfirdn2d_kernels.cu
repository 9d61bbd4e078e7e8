// The CUDA kernel of upfirdn2d (upfirdn2d.h), float32 and float16 with accumulation in float.
// One thread per output element in NHWC order, so neighbouring threads read neighbouring
// channels (coalesced); only the taps that land on real (non-inserted, non-padded) samples are
// read. No TensorFlow header: the op passes its stream, custom_ops/check/ runs it standalone.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "custom_ops/cc/kernels/gpu_launch.h"
#include "custom_ops/cc/kernels/upfirdn2d.h"

namespace tf_distill {
namespace {

template <typename T>
__global__ void UpFirDn2dKernel(UpFirDn2dParams p, int total, const T* __restrict__ x, const T* __restrict__ k,
                                T* __restrict__ y) {
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += blockDim.x * gridDim.x) {
    const int c = idx % p.c;
    int t = idx / p.c;
    const int ox = t % p.out_w;
    t /= p.out_w;
    const int oy = t % p.out_h;
    const int n = t / p.out_h;
    const int vy0 = oy * p.down - p.pad_y0;
    const int vx0 = ox * p.down - p.pad_x0;
    const int tx0 = UpFirDnFirstTap(ox, p.down, p.up, p.pad_x0);
    const T* xn = x + n * p.in_h * p.in_w * p.c + c;
    float acc = 0.0f;
    for (int ty = UpFirDnFirstTap(oy, p.down, p.up, p.pad_y0); ty < p.kh; ty += p.up) {
      const int iy = (vy0 + ty) / p.up;
      if (iy >= p.in_h) break;
      const T* xrow = xn + iy * p.in_w * p.c;
      const T* krow = k + (p.kh - 1 - ty) * p.kw + (p.kw - 1);  // true convolution: flipped taps
      for (int tx = tx0; tx < p.kw; tx += p.up) {
        const int ix = (vx0 + tx) / p.up;
        if (ix >= p.in_w) break;
        acc += static_cast<float>(xrow[ix * p.c]) * static_cast<float>(krow[-tx]);
      }
    }
    y[idx] = static_cast<T>(acc);
  }
}

template <typename T>
std::string Launch(cudaStream_t stream, const UpFirDn2dParams& p, const T* x, const T* k, T* y) {
  // Element counts were checked to fit in int32 by the caller.
  const int total = p.n * p.out_h * p.out_w * p.c;
  const GpuLaunch l = GpuLaunch::ForElements(total);
  UpFirDn2dKernel<T><<<l.blocks, l.threads, 0, stream>>>(p, total, x, k, y);
  return CheckLaunch("UpFirDn2dKernel");
}

}  // namespace

std::string UpFirDn2dGpu(cudaStream_t stream, const UpFirDn2dParams& p, const float* x, const float* k, float* y) {
  return Launch<float>(stream, p, x, k, y);
}

std::string UpFirDn2dGpu(cudaStream_t stream, const UpFirDn2dParams& p, const Half* x, const Half* k, Half* y) {
  return Launch<__half>(stream, p, AsCudaHalf(x), AsCudaHalf(k), AsCudaHalf(y));
}

}  // namespace tf_distill
