// to_rgb: StyleGAN2's ToRGB at inference in one pass, on the CPU. NHWC x [n, h, w, c], per-sample
// weight [n, c, k] (the 1x1 modulated conv with the style already folded in), bias [k], and the
// previous resolution's image `skip` [n, skip_h, skip_w, k], upsampled 2x as upfirdn2d(skip,
// outer(skip_kernel, skip_kernel), up=2, pad=(pad0, pad1)) does (a separable kernel, as StyleGAN2's):
//
//   y[b, i, j, o] = sum_c x[b, i, j, c] * weight[b, c, o] + bias[o] + upfirdn2d(skip)[b, i, j, o]
//
// float32, accumulation in float. Why: in TensorFlow's ops this is a batched matmul to 3 channels,
// a BiasAdd, a polyphase conv with depth_to_space for the skip and an add (five passes, the matmul
// with 3 outputs far below TensorFlow's matmul rate); here the large activation x is read once and
// the output written once. Forward only: the op's gradients are those of the reference
// (tf_distill/ops/to_rgb.py). No CUDA kernel: on GPUs TensorFlow's ops are the right choice.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_TO_RGB_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_TO_RGB_H_

#include <cstdint>

#include "custom_ops/cc/kernels/parallel.h"

namespace tf_distill {

struct ToRgbParams {
  // The caller checks that every element count fits in int32 and that the upsampled skip is h x w.
  int n, h, w, c, k;
  const float* bias = nullptr;  // [k], or nullptr
  const float* skip = nullptr;  // [n, skip_h, skip_w, k], or nullptr
  int skip_h = 0, skip_w = 0;
  const float* skip_kernel = nullptr;  // [kernel_size]: the 1-D factor of upfirdn2d's (true convolution) kernel
  int kernel_size = 0;
  int pad0 = 0;  // upfirdn2d's pad before, both axes
};

// Output size of the 2x upsampled skip along one axis (upfirdn2d with up = 2).
inline int64_t ToRgbSkipOutputSize(int64_t in, int kernel_size, int pad0, int pad1) {
  return in * 2 + pad0 + pad1 - kernel_size + 1;
}

// Vectorized for AVX2 + FMA (picked at run time, cpu_isa.h) when c is a multiple of 8 and k <= 4,
// else plain loops; sharded over output rows by `runner`.
void ToRgbCpu(const CpuRunner& runner, const ToRgbParams& p, const float* x, const float* weight, float* y);

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_TO_RGB_H_
