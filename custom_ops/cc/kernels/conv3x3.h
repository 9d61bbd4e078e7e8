// conv3x3: the 3x3 convs of the generator's high-resolution layers at inference, as direct
// convolutions on the CPU. NHWC input x [n, h, w, c], weight [3, 3, c, k] (HWIO, the layout
// tf.nn.conv2d takes) or one per sample [n, 3, 3, c, k] (a modulated conv's folded weights, so that a
// batch needs no per-sample loop), float32, accumulation in float.
//
//   transposed = false: out[y, x] = sum x[y + i - 1, x + j - 1] * w[i, j] (stride 1, zero pad 1),
//                       output [n, h, w, k] (tf.nn.conv2d, padding SAME).
//   transposed = true:  out[2y + i, 2x + j] += x[y, x] * w[i, j] (stride 2, no padding), output
//                       [n, 2h + 1, 2w + 1, k] (PyTorch conv_transpose2d(stride=2), which is
//                       tf.nn.conv2d_transpose with the filter transposed to [3, 3, k, c]).
//
// Why: TensorFlow's CPU convs (oneDNN) run the student's pruned shapes (about 40 channels at
// 256 px) at 60-80% of their 512-channel rate, and the transposed conv goes through a column
// buffer. A register-blocked direct conv (a few pixels x up to 24 output channels of
// accumulators) reaches their large-conv rate on these shapes. Forward only: the op's gradients
// are TensorFlow's (tf_distill/ops/conv3x3.py). No CUDA kernel: on GPUs cuDNN is the right choice.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_CONV3X3_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_CONV3X3_H_

#include <cstdint>

#include "custom_ops/cc/kernels/epilogue.h"
#include "custom_ops/cc/kernels/parallel.h"

namespace tf_distill {

struct Conv3x3Params {
  // The caller checks that every element count fits in int32.
  int n, in_h, in_w, c, k;
  // Channels of an input pixel: at least c. The conv reads the first c (the weights' input channels), so an
  // input that carries zero channels of a widened layer (the model's pruned widths padded to multiples of
  // 8) needs neither zero weights for them nor a copy without them.
  int x_c;
  bool transposed;
  bool per_sample_weights = false;  // the weight is [n, 3, 3, c, k]: sample i convolves with weight i
  int out_h, out_w;  // in_h, in_w, or 2 * in + 1 when transposed
  // Applied as the sums are stored (StyleGAN2's noise, bias and activation, without passes of their
  // own): bias [k], noise [noise_n, out_h, out_w].
  Epilogue epilogue;
  // Or, where given, [n, k, m]: each sample's 1x1 conv of the epilogue's outputs (a generator's last conv
  // followed by its ToRGB), and y is [n, out_h, out_w, m]: the k-channel activation is never stored.
  const float* project = nullptr;
  int m = 0;
};

inline int64_t Conv3x3OutputSize(int64_t in, bool transposed) { return transposed ? 2 * in + 1 : in; }

// Vectorized for AVX2 + FMA or AVX-512VL (picked at run time, cpu_isa.h) when k is a multiple of 8, else
// plain loops; sharded over output rows by `runner`.
void Conv3x3Cpu(const CpuRunner& runner, const Conv3x3Params& p, const float* x, const float* w, float* y);

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_CONV3X3_H_
