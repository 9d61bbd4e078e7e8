// upfirdn2d: upsample by zero insertion, pad/crop, FIR filter (true convolution), downsample.
// NHWC, the same up/down on both spatial axes, separate pads per axis (the gradient needs
// different pads for height and width when the kernel or the image is not square).
//
// Semantics (spec B.1), per axis: u[j] = x[(j - pad0) / up] when (j - pad0) >= 0 and
// (j - pad0) % up == 0 and the index is in range, else 0; y[o] = sum_t u[o*down + t] *
// k[kh - 1 - t] for t in [0, kh); out = (in*up + pad0 + pad1 - kh) / down + 1.
//
// The kernels work on raw pointers and these parameters, with no TensorFlow header: the op
// (custom_ops/cc/ops/upfirdn2d_op.cc) validates, allocates and calls them, and the standalone
// check (custom_ops/check/) runs the CUDA kernel against the CPU one without TensorFlow.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_UPFIRDN2D_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_UPFIRDN2D_H_

#include <cstdint>
#include <string>
#include <vector>

#include "custom_ops/cc/kernels/epilogue.h"
#include "custom_ops/cc/kernels/half.h"
#include "custom_ops/cc/kernels/parallel.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*: no CUDA header needed to declare the launches

namespace tf_distill {

struct UpFirDn2dParams {
  // The caller checks that every element count and coordinate fits in int32.
  int n, in_h, in_w, c;
  int out_h, out_w;
  int kh, kw;
  int up, down;
  int pad_y0, pad_x0;  // pads before; the pads after only shape the output size
  // Applied to the output (CPU, float only: the op that sets it has no other kernel), a few rows at a time
  // right after they are written, instead of in passes of their own. bias [c], noise [noise_n, out_h, out_w].
  Epilogue epilogue;
};

// Floor division (Python's //) for a positive divisor.
inline int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output size along one axis (< 1 when the configuration leaves nothing).
inline int64_t UpFirDn2dOutputSize(int64_t in, int64_t ksize, int up, int down, int pad0, int pad1) {
  return FloorDiv(in * up + pad0 + pad1 - ksize, down) + 1;
}

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

// For every output coordinate along one axis, the taps that hit real input samples:
// input index and kernel index (the kernel flip of the true convolution is applied here).
struct AxisTaps {
  std::vector<int> begin;  // out + 1 offsets into `in` / `k`
  std::vector<int> in;
  std::vector<int> k;
};

inline AxisTaps MakeAxisTaps(int out, int in, int ksize, int up, int down, int pad0) {
  AxisTaps t;
  t.begin.resize(out + 1);
  for (int o = 0; o < out; ++o) {
    t.begin[o] = static_cast<int>(t.in.size());
    const int v0 = o * down - pad0;
    for (int tap = UpFirDnFirstTap(o, down, up, pad0); tap < ksize; tap += up) {
      const int i = (v0 + tap) / up;
      if (i >= in) break;
      t.in.push_back(i);
      t.k.push_back(ksize - 1 - tap);
    }
  }
  t.begin[out] = static_cast<int>(t.in.size());
  return t;
}

// x [n, in_h, in_w, c], k [kh, kw], y [n, out_h, out_w, c], accumulation in float.
// CPU (upfirdn2d_kernels.cc): vectorized, sharded over output rows by `runner`.
void UpFirDn2dCpu(const CpuRunner& runner, const UpFirDn2dParams& p, const float* x, const float* k, float* y);
void UpFirDn2dCpu(const CpuRunner& runner, const UpFirDn2dParams& p, const Half* x, const Half* k, Half* y);

// CUDA (upfirdn2d_kernels.cu): device pointers, enqueued on `stream`; returns an empty string,
// or the launch error.
std::string UpFirDn2dGpu(CUstream_st* stream, const UpFirDn2dParams& p, const float* x, const float* k, float* y);
std::string UpFirDn2dGpu(CUstream_st* stream, const UpFirDn2dParams& p, const Half* x, const Half* k, Half* y);

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_UPFIRDN2D_H_
