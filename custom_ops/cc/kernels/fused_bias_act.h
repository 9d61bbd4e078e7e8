// Fused bias + activation + gain on the last (channel) axis:
//   y = act(x + b) * gain, act in {linear, relu, lrelu(alpha)}; relu is lrelu with alpha 0.
// The gradient op takes the forward output y (not x): for gain >= 0, y > 0 exactly where
// x + b > 0 (at x + b == 0 the negative slope is used, like tf.nn.leaky_relu), for gain < 0
// where y < 0. That needs alpha >= 0, which the op enforces.
//   dx = dy * gain * (positive ? 1 : alpha)
// and, when asked, the bias gradient db = sum of dx over all but the last axis, fused into the
// same pass (accumulated in float).
//
// The kernels work on raw pointers and these parameters, with no TensorFlow header: the ops
// (custom_ops/cc/ops/fused_bias_act_op.cc) validate, allocate and call them, and the
// standalone check (custom_ops/check/) runs the CUDA kernels against the CPU ones.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_FUSED_BIAS_ACT_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_FUSED_BIAS_ACT_H_

#include <cstdint>
#include <string>

#include "custom_ops/cc/kernels/half.h"
#include "custom_ops/cc/kernels/parallel.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*: no CUDA header needed to declare the launches

namespace tf_distill {

struct FusedBiasActParams {
  int64_t size;      // number of elements of x / y (fits in int32, checked by the caller)
  int channels;      // length of the last axis (the bias axis), >= 1
  bool has_bias;     // forward: bias has `channels` elements; gradient: also compute db
  bool linear;       // act == "linear": no activation
  float alpha;       // negative slope (0 for relu), >= 0
  float gain;
};

// Forward: y = act(x + b) * gain; b is null when !p.has_bias. May run in place (y == x).
// Gradient: dx = dy * act'(y) * gain, with y the forward output (dx may alias dy or y); if
// p.has_bias also db[c] = sum of dx[..., c] (`channels` values, zeros when size is 0).

// CPU (fused_bias_act_kernels.cc): vectorized, sharded by `runner`.
void FusedBiasActCpu(const CpuRunner& runner, const FusedBiasActParams& p, const float* x, const float* b, float* y);
void FusedBiasActCpu(const CpuRunner& runner, const FusedBiasActParams& p, const Half* x, const Half* b, Half* y);
void FusedBiasActGradCpu(const CpuRunner& runner, const FusedBiasActParams& p, const float* dy, const float* y,
                         float* dx, float* db);
void FusedBiasActGradCpu(const CpuRunner& runner, const FusedBiasActParams& p, const Half* dy, const Half* y,
                         Half* dx, Half* db);

// CUDA (fused_bias_act_kernels.cu): device pointers, enqueued on `stream`; returns an empty
// string, or the launch error. The gradient with p.has_bias needs `db_acc`, device scratch for
// `channels` floats.
std::string FusedBiasActGpu(CUstream_st* stream, const FusedBiasActParams& p, const float* x, const float* b,
                            float* y);
std::string FusedBiasActGpu(CUstream_st* stream, const FusedBiasActParams& p, const Half* x, const Half* b, Half* y);
std::string FusedBiasActGradGpu(CUstream_st* stream, const FusedBiasActParams& p, const float* dy, const float* y,
                                float* dx, float* db_acc, float* db);
std::string FusedBiasActGradGpu(CUstream_st* stream, const FusedBiasActParams& p, const Half* dy, const Half* y,
                                Half* dx, float* db_acc, Half* db);

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_FUSED_BIAS_ACT_H_
