// upfirdn2d: upsample by zero insertion, pad/crop, FIR filter (true convolution), downsample.
// NHWC, the same up/down on both spatial axes, separate pads per axis (the gradient needs
// different pads for height and width when the kernel or the image is not square).
//
// Semantics (spec B.1), per axis: u[j] = x[(j - pad0) / up] when (j - pad0) >= 0 and
// (j - pad0) % up == 0 and the index is in range, else 0; y[o] = sum_t u[o*down + t] *
// k[kh - 1 - t] for t in [0, kh); out = (in*up + pad0 + pad1 - kh) / down + 1.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_UPFIRDN2D_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_UPFIRDN2D_H_

#include <cstdint>
#include <string>

// Includers define EIGEN_USE_THREADS (C++) or EIGEN_USE_GPU (CUDA) before this.
#include "unsupported/Eigen/CXX11/Tensor"

namespace tf_distill {

struct UpFirDn2dParams {
  // All sizes are validated by the op kernel: every element count fits in int32.
  int n, in_h, in_w, c;
  int out_h, out_w;
  int kh, kw;
  int up, down;
  int pad_y0, pad_x0;  // pads before; the pads after only shape the output size
};

// First tap t >= 0 that lands on a real input sample for output coordinate `o`, i.e. the
// smallest t with (o*down - pad0 + t) >= 0 and divisible by up. Taps then step by `up`.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline int UpFirDnFirstTap(int o, int down, int up, int pad0) {
  const int v = o * down - pad0;
  if (v < 0) return -v;
  const int r = v % up;
  return r == 0 ? 0 : up - r;
}

namespace functor {

// Returns an empty string on success, a readable error otherwise.
template <typename Device, typename T>
struct UpFirDn2dFunctor {
  std::string operator()(const Device& d, const UpFirDn2dParams& p, const T* x, const T* k, T* y);
};

#if GOOGLE_CUDA
// Defined in upfirdn2d_kernels.cu.cc (nvcc).
template <>
std::string UpFirDn2dFunctor<Eigen::GpuDevice, float>::operator()(const Eigen::GpuDevice& d, const UpFirDn2dParams& p,
                                                                  const float* x, const float* k, float* y);
template <>
std::string UpFirDn2dFunctor<Eigen::GpuDevice, Eigen::half>::operator()(const Eigen::GpuDevice& d,
                                                                        const UpFirDn2dParams& p,
                                                                        const Eigen::half* x, const Eigen::half* k,
                                                                        Eigen::half* y);
#endif  // GOOGLE_CUDA

}  // namespace functor
}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_UPFIRDN2D_H_
