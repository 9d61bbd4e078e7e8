// TfDistill>FusedBiasAct and its gradient op: registrations, shape functions, and the op
// kernels, which validate the inputs, allocate the outputs and call the TensorFlow-free
// kernels (fused_bias_act.h).
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "custom_ops/cc/kernels/fused_bias_act.h"
#include "custom_ops/cc/ops/checks.h"
#include "custom_ops/cc/ops/device.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.h"

namespace tf_distill {

using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

constexpr char kX[] = "x of rank >= 1 (bias on the last axis)";

// What the bias must be for an x of shape `x_shape` with `channels` on its last axis.
std::string ExpectedBias(int64_t channels, absl::string_view x_shape) {
  return absl::StrCat("a bias of shape [", channels, "] (the last axis of x ", x_shape, ") or [0] for no bias");
}

absl::Status FusedBiasActShape(InferenceContext* c) {
  ShapeHandle x = c->input(0), b;
  if (c->RankKnown(x) && c->Rank(x) < 1) return ShapeError("fused_bias_act", kX, c->DebugString(x));
  TF_RETURN_IF_ERROR(InputWithRank(c, 1, 1, "fused_bias_act", "a 1-D bias", &b));
  if (c->RankKnown(x) && c->ValueKnown(c->Dim(b, 0)) && c->ValueKnown(c->Dim(x, -1))) {
    const int64_t nb = c->Value(c->Dim(b, 0)), nc = c->Value(c->Dim(x, -1));
    if (nb != 0 && nb != nc) {
      return ShapeError("fused_bias_act", ExpectedBias(nc, c->DebugString(x)), c->DebugString(b));
    }
  }
  c->set_output(0, x);
  return absl::OkStatus();
}

absl::Status FusedBiasActGradShape(InferenceContext* c) {
  ShapeHandle out;
  if (!c->Merge(c->input(0), c->input(1), &out).ok()) {
    return absl::InvalidArgumentError(absl::StrCat("fused_bias_act_grad expects dy and y of the same shape, got ",
                                                   c->DebugString(c->input(0)), " and ",
                                                   c->DebugString(c->input(1)), "."));
  }
  bool bias_grad = false;
  TF_RETURN_IF_ERROR(c->GetAttr("bias_grad", &bias_grad));
  c->set_output(0, out);
  if (!bias_grad) {
    c->set_output(1, c->MakeShape({0}));
  } else if (c->RankKnown(out)) {
    if (c->Rank(out) < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "fused_bias_act_grad with bias_grad needs dy of rank >= 1, got shape ", c->DebugString(out), "."));
    }
    c->set_output(1, c->MakeShape({c->Dim(out, -1)}));
  } else {
    c->set_output(1, c->Vector(c->UnknownDim()));
  }
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfDistill>FusedBiasAct")
    .Input("x: T")
    .Input("bias: T")
    .Output("y: T")
    .Attr("T: {float, half}")
    .Attr("act: {'linear', 'relu', 'lrelu'} = 'lrelu'")
    .Attr("alpha: float = 0.2")
    .Attr("gain: float = 1.4142135623730951")
    .SetShapeFn(FusedBiasActShape)
    .Doc(R"doc(
y = act(x + bias) * gain with the bias on the last axis (shape [C], or [0] for no bias).
act: linear, relu, or lrelu with negative slope alpha >= 0 (used at x + bias == 0 too).
)doc");

REGISTER_OP("TfDistill>FusedBiasActGrad")
    .Input("dy: T")
    .Input("y: T")
    .Output("dx: T")
    .Output("db: T")
    .Attr("T: {float, half}")
    .Attr("act: {'linear', 'relu', 'lrelu'} = 'lrelu'")
    .Attr("alpha: float = 0.2")
    .Attr("gain: float = 1.4142135623730951")
    .Attr("bias_grad: bool = false")
    .SetShapeFn(FusedBiasActGradShape)
    .Doc(R"doc(
Gradient of FusedBiasAct given the forward output y: dx = dy * gain * slope, the slope being
1 where the pre-activation was positive (read from the sign of y * gain) and alpha
elsewhere; with bias_grad, db = sum of dx over all but the last axis (accumulated in float)
in the same pass, else db is empty. Linear in dy, so its own gradient w.r.t. dy is this op
again (any order).
)doc");

namespace {

// Attributes shared by the forward and the gradient op.
absl::Status ReadActAttrs(tensorflow::OpKernelConstruction* ctx, FusedBiasActParams* p) {
  std::string act;
  float alpha = 0.0f, gain = 1.0f;
  TF_RETURN_IF_ERROR(ctx->GetAttr("act", &act));
  TF_RETURN_IF_ERROR(ctx->GetAttr("alpha", &alpha));
  TF_RETURN_IF_ERROR(ctx->GetAttr("gain", &gain));
  if (act != "linear" && act != "relu" && act != "lrelu") {
    return absl::InvalidArgumentError(
        absl::StrCat("fused_bias_act: act must be 'linear', 'relu' or 'lrelu', got '", act, "'."));
  }
  if (!std::isfinite(alpha) || !std::isfinite(gain)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fused_bias_act: alpha and gain must be finite, got alpha=", alpha, ", gain=", gain, "."));
  }
  if (act == "lrelu" && alpha < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fused_bias_act: the custom kernel needs alpha >= 0 (its gradient reads the sign of the output), got alpha=",
        alpha, "."));
  }
  p->linear = act == "linear";
  p->alpha = act == "relu" ? 0.0f : alpha;
  p->gain = gain;
  return absl::OkStatus();
}

absl::Status CheckSize(const tensorflow::Tensor& t, const char* what) {
  if (t.NumElements() > kInt32Max) {
    return absl::InvalidArgumentError(absl::StrCat("fused_bias_act supports tensors of at most 2^31-1 elements; ",
                                                   what, " has shape ", t.shape().DebugString(), "."));
  }
  return absl::OkStatus();
}

}  // namespace

template <typename Device, typename T>
class FusedBiasActOp : public tensorflow::OpKernel {
 public:
  explicit FusedBiasActOp(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadActAttrs(ctx, &params_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& x = ctx->input(0);
    const tensorflow::Tensor& b = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() >= 1, ShapeError("fused_bias_act", kX, x));
    const int64_t channels = x.dim_size(x.dims() - 1);
    OP_REQUIRES(ctx, b.dims() == 1 && (b.dim_size(0) == 0 || b.dim_size(0) == channels),
                ShapeError("fused_bias_act", ExpectedBias(channels, x.shape().DebugString()), b));
    OP_REQUIRES_OK(ctx, CheckSize(x, "x"));
    tensorflow::Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    if (x.NumElements() == 0) return;
    FusedBiasActParams p = params_;
    p.size = x.NumElements();
    p.channels = static_cast<int>(channels);
    p.has_bias = b.dim_size(0) > 0;
    const std::string err = Run(ctx, static_cast<const Device*>(nullptr), p, KernelData<T>(x),
                                p.has_bias ? KernelData<T>(b) : nullptr, KernelData<T>(y));
    OP_REQUIRES(ctx, err.empty(), absl::InternalError(absl::StrCat("fused_bias_act: ", err)));
  }

 private:
  template <typename K>
  static std::string Run(tensorflow::OpKernelContext* ctx, const CPUDevice*, const FusedBiasActParams& p,
                         const K* x, const K* b, K* y) {
    FusedBiasActCpu(EigenCpuRunner(ctx->eigen_cpu_device()), p, x, b, y);
    return std::string();
  }
#if GOOGLE_CUDA
  template <typename K>
  static std::string Run(tensorflow::OpKernelContext* ctx, const GPUDevice*, const FusedBiasActParams& p,
                         const K* x, const K* b, K* y) {
    return FusedBiasActGpu(ctx->eigen_gpu_device().stream(), p, x, b, y);
  }
#endif

  FusedBiasActParams params_{};
};

template <typename Device, typename T>
class FusedBiasActGradOp : public tensorflow::OpKernel {
 public:
  explicit FusedBiasActGradOp(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadActAttrs(ctx, &params_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bias_grad", &bias_grad_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& dy = ctx->input(0);
    const tensorflow::Tensor& y = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == y.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    "fused_bias_act_grad expects dy and y of the same shape, got ", dy.shape().DebugString(),
                    " and ", y.shape().DebugString(), ".")));
    OP_REQUIRES(ctx, !bias_grad_ || dy.dims() >= 1,
                absl::InvalidArgumentError(absl::StrCat(
                    "fused_bias_act_grad with bias_grad needs dy of rank >= 1, got shape ", dy.shape().DebugString(),
                    ".")));
    OP_REQUIRES_OK(ctx, CheckSize(dy, "dy"));
    const int64_t channels = dy.dims() > 0 ? dy.dim_size(dy.dims() - 1) : 1;
    tensorflow::Tensor* dx = nullptr;
    // dx may take over the buffer of dy or of y (elementwise, same index: safe in place).
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0, 1}, 0, dy.shape(), &dx));
    tensorflow::Tensor* db = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tensorflow::TensorShape({bias_grad_ ? channels : 0}), &db));
    // Nothing to do for empty tensors, except that db sums no rows: the functor zeroes it.
    if (dy.NumElements() == 0 && !(bias_grad_ && channels > 0)) return;
    FusedBiasActParams p = params_;
    p.size = dy.NumElements();
    p.channels = static_cast<int>(std::max<int64_t>(channels, 1));
    p.has_bias = bias_grad_;
    tensorflow::Tensor db_acc;
    if (bias_grad_) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape({channels}), &db_acc));
    }
    const std::string err =
        Run(ctx, static_cast<const Device*>(nullptr), p, KernelData<T>(dy), KernelData<T>(y), KernelData<T>(dx),
            bias_grad_ ? db_acc.flat<float>().data() : nullptr, bias_grad_ ? KernelData<T>(db) : nullptr);
    OP_REQUIRES(ctx, err.empty(), absl::InternalError(absl::StrCat("fused_bias_act_grad: ", err)));
  }

 private:
  template <typename K>
  static std::string Run(tensorflow::OpKernelContext* ctx, const CPUDevice*, const FusedBiasActParams& p,
                         const K* dy, const K* y, K* dx, float* /*db_acc: GPU only*/, K* db) {
    FusedBiasActGradCpu(EigenCpuRunner(ctx->eigen_cpu_device()), p, dy, y, dx, db);
    return std::string();
  }
#if GOOGLE_CUDA
  template <typename K>
  static std::string Run(tensorflow::OpKernelContext* ctx, const GPUDevice*, const FusedBiasActParams& p,
                         const K* dy, const K* y, K* dx, float* db_acc, K* db) {
    return FusedBiasActGradGpu(ctx->eigen_gpu_device().stream(), p, dy, y, dx, db_acc, db);
  }
#endif

  FusedBiasActParams params_{};
  bool bias_grad_ = false;
};

#define TF_DISTILL_REGISTER(DEV, DEVICE, T)                                                                   \
  REGISTER_KERNEL_BUILDER(Name("TfDistill>FusedBiasAct").Device(tensorflow::DEV).TypeConstraint<T>("T"),     \
                          FusedBiasActOp<DEVICE, T>);                                                         \
  REGISTER_KERNEL_BUILDER(Name("TfDistill>FusedBiasActGrad").Device(tensorflow::DEV).TypeConstraint<T>("T"), \
                          FusedBiasActGradOp<DEVICE, T>);

TF_DISTILL_REGISTER(DEVICE_CPU, CPUDevice, float);
TF_DISTILL_REGISTER(DEVICE_CPU, CPUDevice, Eigen::half);

#if GOOGLE_CUDA
TF_DISTILL_REGISTER(DEVICE_GPU, GPUDevice, float);
TF_DISTILL_REGISTER(DEVICE_GPU, GPUDevice, Eigen::half);
#endif
#undef TF_DISTILL_REGISTER

}  // namespace tf_distill
