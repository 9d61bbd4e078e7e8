// TfDistill>ToRgb: registration, shape function, and the CPU op kernel, which validates the
// inputs, allocates the output and calls the TensorFlow-free kernel (to_rgb.h).
#define EIGEN_USE_THREADS

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "custom_ops/cc/kernels/to_rgb.h"
#include "custom_ops/cc/ops/checks.h"
#include "custom_ops/cc/ops/device.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace tf_distill {

using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

constexpr char kWeight[] = "a weight [n, c, k] (one [c, k] per sample of x)";

absl::Status ToRgbShape(InferenceContext* c) {
  ShapeHandle x, w;
  TF_RETURN_IF_ERROR(InputWithRank(c, 0, 4, "to_rgb", kNhwcX, &x));
  TF_RETURN_IF_ERROR(InputWithRank(c, 1, 3, "to_rgb", kWeight, &w));
  DimensionHandle unused;
  if (!c->Merge(c->Dim(x, 0), c->Dim(w, 0), &unused).ok() || !c->Merge(c->Dim(x, 3), c->Dim(w, 1), &unused).ok()) {
    return ShapeError("to_rgb", absl::StrCat(kWeight, " for x ", c->DebugString(x)), c->DebugString(w));
  }
  c->set_output(0, c->MakeShape({c->Dim(x, 0), c->Dim(x, 1), c->Dim(x, 2), c->Dim(w, 2)}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfDistill>ToRgb")
    .Input("x: float")
    .Input("weight: float")
    .Input("bias: float")
    .Input("skip: float")
    .Input("skip_kernel: float")
    .Output("y: float")
    .Attr("pad0: int = 0")
    .Attr("pad1: int = 0")
    .SetShapeFn(ToRgbShape)
    .Doc(R"doc(
StyleGAN2's ToRGB at inference, CPU only; its gradients are registered in Python as those of the
reference (tf_distill/ops/to_rgb.py). NHWC `x` [n, h, w, c], per-sample `weight` [n, c, k]:
y[b, i, j, o] = sum_c x[b, i, j, c] weight[b, c, o] + bias[o] (bias [k]; empty: none)
+ upfirdn2d(skip, outer(skip_kernel, skip_kernel), up=2, pad=(pad0, pad1))[b, i, j, o] (skip
[n, h', w', k] whose upsampled size is h x w, skip_kernel [s]; an empty skip: none).
)doc");

class ToRgbOp : public tensorflow::OpKernel {
 public:
  explicit ToRgbOp(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad0", &pad0_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad1", &pad1_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& x = ctx->input(0);
    const tensorflow::Tensor& w = ctx->input(1);
    const tensorflow::Tensor& skip = ctx->input(3);
    const tensorflow::Tensor& kernel = ctx->input(4);
    OP_REQUIRES(ctx, x.dims() == 4, ShapeError("to_rgb", kNhwcX, x));
    const int64_t n = x.dim_size(0), h = x.dim_size(1), width = x.dim_size(2), c = x.dim_size(3);
    OP_REQUIRES(ctx, w.dims() == 3 && w.dim_size(0) == n && w.dim_size(1) == c,
                ShapeError("to_rgb", absl::StrCat(kWeight, " for x ", x.shape().DebugString()), w));
    const int64_t k = w.dim_size(2);
    ToRgbParams p;
    OP_REQUIRES_OK(ctx, ReadOptionalBias(ctx->input(2), "to_rgb", k, &p.bias));
    const bool has_skip = skip.NumElements() > 0;
    if (has_skip) {
      OP_REQUIRES(ctx, kernel.dims() == 1 && kernel.dim_size(0) > 0, ShapeError("to_rgb", "a skip_kernel [s]", kernel));
      const int s = static_cast<int>(kernel.dim_size(0));
      const bool fits = skip.dims() == 4 && skip.dim_size(0) == n && skip.dim_size(3) == k &&
                        ToRgbSkipOutputSize(skip.dim_size(1), s, pad0_, pad1_) == h &&
                        ToRgbSkipOutputSize(skip.dim_size(2), s, pad0_, pad1_) == width;
      OP_REQUIRES(ctx, fits && pad0_ >= 0 && pad1_ >= 0,
                  ShapeError("to_rgb", absl::StrCat("a skip [", n, ", h', w', ", k, "] that the 2x upsampling with pads (",
                                                    pad0_, ", ", pad1_, ") brings to ", h, " x ", width,
                                                    ", or an empty one"),
                             skip));
    }
    OP_REQUIRES(ctx, x.NumElements() <= kInt32Max && w.NumElements() <= kInt32Max && skip.NumElements() <= kInt32Max &&
                         n * h * width * k <= kInt32Max,
                absl::InvalidArgumentError(absl::StrCat("to_rgb supports tensors of at most 2^31-1 elements (int32 "
                                                        "indexing); input ", x.shape().DebugString(), ". Split the batch.")));
    tensorflow::Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tensorflow::TensorShape({n, h, width, k}), &y));
    if (y->NumElements() == 0) return;
    p.n = static_cast<int>(n);
    p.h = static_cast<int>(h);
    p.w = static_cast<int>(width);
    p.c = static_cast<int>(c);
    p.k = static_cast<int>(k);
    if (has_skip) {
      p.skip = skip.flat<float>().data();
      p.skip_h = static_cast<int>(skip.dim_size(1));
      p.skip_w = static_cast<int>(skip.dim_size(2));
      p.skip_kernel = kernel.flat<float>().data();
      p.kernel_size = static_cast<int>(kernel.dim_size(0));
      p.pad0 = pad0_;
    }
    ToRgbCpu(EigenCpuRunner(ctx->eigen_cpu_device()), p, x.flat<float>().data(), w.flat<float>().data(),
             y->flat<float>().data());
  }

 private:
  int pad0_ = 0;
  int pad1_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("TfDistill>ToRgb").Device(tensorflow::DEVICE_CPU), ToRgbOp);

}  // namespace tf_distill
