// TfDistill>Conv3x3: registration, shape function, and the CPU op kernel, which validates the
// inputs, allocates the output and calls the TensorFlow-free kernel (conv3x3.h).
#define EIGEN_USE_THREADS

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "custom_ops/cc/kernels/conv3x3.h"
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

constexpr char kWeight[] = "a weight [3, 3, in, out] or one per sample [n, 3, 3, in, out]";
constexpr int kEpilogueInputs = 3;  // bias, noise and noise_strength follow x, weight and project

absl::Status Conv3x3Shape(InferenceContext* c) {
  bool transposed;
  TF_RETURN_IF_ERROR(c->GetAttr("transposed", &transposed));
  ShapeHandle x, w;
  TF_RETURN_IF_ERROR(InputWithRank(c, 0, 4, "conv3x3", kNhwcX, &x));
  w = c->input(1);
  if (!c->RankKnown(w) || (c->Rank(w) != 4 && c->Rank(w) != 5)) {
    if (c->RankKnown(w)) return ShapeError("conv3x3", kWeight, c->DebugString(w));
    c->set_output(0, c->UnknownShapeOfRank(4));
    return absl::OkStatus();
  }
  const int first = c->Rank(w) - 4;  // the kernel's first axis: 1 for per-sample weights
  DimensionHandle batch = c->Dim(x, 0);
  if (first == 1 && !c->Merge(c->Dim(x, 0), c->Dim(w, 0), &batch).ok()) {
    return absl::InvalidArgumentError(absl::StrCat("conv3x3: per-sample weights ", c->DebugString(w),
                                                   " for another batch than x ", c->DebugString(x), "."));
  }
  for (int i = first; i < first + 2; ++i) {
    if (c->ValueKnown(c->Dim(w, i)) && c->Value(c->Dim(w, i)) != 3) {
      return ShapeError("conv3x3", kWeight, c->DebugString(w));
    }
  }
  const DimensionHandle x_c = c->Dim(x, 3), w_in = c->Dim(w, first + 2);
  if (c->ValueKnown(x_c) && c->ValueKnown(w_in) && c->Value(w_in) > c->Value(x_c)) {
    return absl::InvalidArgumentError(absl::StrCat("conv3x3: the weight ", c->DebugString(w),
                                                   " reads more input channels than x ", c->DebugString(x),
                                                   " has."));
  }
  DimensionHandle out_h = c->Dim(x, 1), out_w = c->Dim(x, 2);
  if (transposed) {
    TF_RETURN_IF_ERROR(c->Multiply(out_h, 2, &out_h));
    TF_RETURN_IF_ERROR(c->Add(out_h, 1, &out_h));
    TF_RETURN_IF_ERROR(c->Multiply(out_w, 2, &out_w));
    TF_RETURN_IF_ERROR(c->Add(out_w, 1, &out_w));
  }
  DimensionHandle channels = c->Dim(w, first + 3);
  const ShapeHandle project = c->input(2);
  if (!c->RankKnown(project) || c->Rank(project) != 1) {  // rank 1: an empty one (none)
    channels = c->RankKnown(project) && c->Rank(project) == 3 ? c->Dim(project, 2) : c->UnknownDim();
  }
  c->set_output(0, c->MakeShape({batch, out_h, out_w, channels}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfDistill>Conv3x3")
    .Input("x: float")
    .Input("weight: float")
    .Input("project: float")
    .Input("bias: float")
    .Input("noise: float")
    .Input("noise_strength: float")
    .Output("y: float")
    .Attr("transposed: bool = false")
    .Attr("activation: {'linear', 'lrelu'} = 'linear'")
    .Attr("alpha: float = 0.2")
    .SetShapeFn(Conv3x3Shape)
    .Doc(R"doc(
3x3 conv of NHWC `x` with `weight` [3, 3, in, out] (HWIO), or sample i of x with weight[i] of
[n, 3, 3, in, out], CPU only. x may carry more than `in` channels: the conv reads the first `in` of
each pixel (a widened layer's trailing zero channels need no weights). Its gradients are
registered in Python (tf_distill/ops/conv3x3.py).
transposed=false: stride 1, zero pad 1 (tf.nn.conv2d padding SAME), output [n, h, w, out].
transposed=true: stride-2 transposed conv without padding, out[2y+i, 2x+j] += x[y, x] w[i, j],
output [n, 2h+1, 2w+1, out] (PyTorch conv_transpose2d(stride=2)).
Then, as the sums are stored: + bias [out] (empty: none), + noise_strength (a scalar) * noise
[1 or n, out_h, out_w, 1] (empty: none), and the activation (lrelu: slope `alpha` below zero).
`project` [n, out, m] (empty: none): sample i's outputs are then multiplied by project[i] and only those
m channels are stored (y [n, out_h, out_w, m]; a generator's last conv followed by its ToRGB).
)doc");

class Conv3x3Op : public tensorflow::OpKernel {
 public:
  explicit Conv3x3Op(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transposed", &transposed_));
    OP_REQUIRES_OK(ctx, ReadActivation(ctx, &lrelu_, &alpha_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& x = ctx->input(0);
    const tensorflow::Tensor& w = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() == 4, ShapeError("conv3x3", kNhwcX, x));
    const int first = w.dims() - 4;  // the kernel's first axis: 1 for per-sample weights
    OP_REQUIRES(ctx, (first == 0 || first == 1) && w.dim_size(first) == 3 && w.dim_size(first + 1) == 3,
                ShapeError("conv3x3", kWeight, w));
    OP_REQUIRES(ctx, first == 0 || w.dim_size(0) == x.dim_size(0),
                absl::InvalidArgumentError(absl::StrCat("conv3x3: per-sample weights ", w.shape().DebugString(),
                                                        " for another batch than x ", x.shape().DebugString(), ".")));
    OP_REQUIRES(ctx, w.dim_size(first + 2) <= x.dim_size(3),
                absl::InvalidArgumentError(absl::StrCat("conv3x3: the weight ", w.shape().DebugString(),
                                                        " reads more input channels than x ",
                                                        x.shape().DebugString(), " has.")));
    const int64_t n = x.dim_size(0), in_h = x.dim_size(1), in_w = x.dim_size(2), c = w.dim_size(first + 2);
    const int64_t k = w.dim_size(first + 3);
    const int64_t out_h = Conv3x3OutputSize(in_h, transposed_), out_w = Conv3x3OutputSize(in_w, transposed_);
    OP_REQUIRES(ctx, x.NumElements() <= kInt32Max && w.NumElements() <= kInt32Max && n * out_h * out_w * k <= kInt32Max,
                absl::InvalidArgumentError(absl::StrCat(
                    "conv3x3 supports tensors of at most 2^31-1 elements (int32 indexing); input ",
                    x.shape().DebugString(), ", weight ", w.shape().DebugString(), ". Split the batch.")));
    Conv3x3Params p;
    OP_REQUIRES_OK(ctx, ReadEpilogue(ctx, kEpilogueInputs, "conv3x3", n, out_h, out_w, k, lrelu_, alpha_,
                                     &p.epilogue));
    const tensorflow::Tensor& project = ctx->input(2);
    const bool projects = project.NumElements() > 0;
    OP_REQUIRES(ctx, !projects || (project.dims() == 3 && project.dim_size(0) == n && project.dim_size(1) == k),
                ShapeError("conv3x3", absl::StrCat("a projection [", n, ", ", k, ", m] or an empty one"), project));
    const int64_t out_c = projects ? project.dim_size(2) : k;
    OP_REQUIRES(ctx, n * out_h * out_w * out_c <= kInt32Max,
                absl::InvalidArgumentError("conv3x3 supports outputs of at most 2^31-1 elements. Split the batch."));
    tensorflow::Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tensorflow::TensorShape({n, out_h, out_w, out_c}), &y));
    if (y->NumElements() == 0) return;
    if (w.NumElements() == 0 && p.epilogue.bias == nullptr && p.epilogue.noise == nullptr && !projects) {  // zeros
      y->flat<float>().setZero();
      return;
    }
    p.n = static_cast<int>(n);
    p.in_h = static_cast<int>(in_h);
    p.in_w = static_cast<int>(in_w);
    p.c = static_cast<int>(c);
    p.x_c = static_cast<int>(x.dim_size(3));
    p.k = static_cast<int>(k);
    p.transposed = transposed_;
    p.per_sample_weights = first == 1;
    p.out_h = static_cast<int>(out_h);
    p.out_w = static_cast<int>(out_w);
    p.project = projects ? project.flat<float>().data() : nullptr;
    p.m = static_cast<int>(projects ? out_c : 0);
    Conv3x3Cpu(EigenCpuRunner(ctx->eigen_cpu_device()), p, x.flat<float>().data(), w.flat<float>().data(),
               y->flat<float>().data());
  }

 private:
  bool transposed_ = false;
  bool lrelu_ = false;
  float alpha_ = 0.2f;
};

REGISTER_KERNEL_BUILDER(Name("TfDistill>Conv3x3").Device(tensorflow::DEVICE_CPU), Conv3x3Op);

}  // namespace tf_distill
