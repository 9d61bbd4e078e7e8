// TfDistill>Epilogue: registration, shape function, and the CPU op kernel, which validates the inputs,
// allocates the output and calls the TensorFlow-free kernel (epilogue.h).
#define EIGEN_USE_THREADS

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "custom_ops/cc/kernels/epilogue.h"
#include "custom_ops/cc/ops/checks.h"
#include "custom_ops/cc/ops/device.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tf_distill {

using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

absl::Status EpilogueShape(InferenceContext* c) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(InputWithRank(c, 0, 4, "epilogue", kNhwcX, &x));
  c->set_output(0, x);
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfDistill>Epilogue")
    .Input("x: float")
    .Input("bias: float")
    .Input("noise: float")
    .Input("noise_strength: float")
    .Input("scale: float")
    .Output("y: float")
    .Attr("activation: {'linear', 'lrelu'} = 'linear'")
    .Attr("alpha: float = 0.2")
    .SetShapeFn(EpilogueShape)
    .Doc(R"doc(
StyleGAN2's epilogue after a conv of NHWC `x` [n, h, w, c], in one pass: times scale [n, c] (per sample
and channel, a modulated conv's demodulation; empty: none), + bias [c] (empty: none), + noise_strength
(a scalar) * noise [1 or n, h, w, 1] (empty: none), and the activation (lrelu: slope `alpha` below
zero). CPU, float32 only; its gradients are registered in Python as those of the reference
(tf_distill/ops/epilogue.py).
)doc");

class EpilogueOp : public tensorflow::OpKernel {
 public:
  explicit EpilogueOp(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadActivation(ctx, &lrelu_, &alpha_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() == 4, ShapeError("epilogue", kNhwcX, x));
    const int64_t n = x.dim_size(0), h = x.dim_size(1), w = x.dim_size(2), c = x.dim_size(3);
    OP_REQUIRES(ctx, x.NumElements() <= kInt32Max,
                absl::InvalidArgumentError(absl::StrCat("epilogue supports tensors of at most 2^31-1 elements "
                                                        "(int32 indexing); input ", x.shape().DebugString(),
                                                        ". Split the batch.")));
    Epilogue e;
    OP_REQUIRES_OK(ctx, ReadEpilogue(ctx, 1, "epilogue", n, h, w, c, lrelu_, alpha_, &e));
    OP_REQUIRES_OK(ctx, ReadEpilogueScale(ctx, 4, "epilogue", n, c, &e));
    tensorflow::Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    if (y->NumElements() == 0) return;
    EpilogueCpu(EigenCpuRunner(ctx->eigen_cpu_device()), e, static_cast<int>(n), static_cast<int>(h),
                static_cast<int>(w), static_cast<int>(c), x.flat<float>().data(), y->flat<float>().data());
  }

 private:
  bool lrelu_ = false;
  float alpha_ = 0.2f;
};

REGISTER_KERNEL_BUILDER(Name("TfDistill>Epilogue").Device(tensorflow::DEVICE_CPU), EpilogueOp);

}  // namespace tf_distill
