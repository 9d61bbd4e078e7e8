// TfDistill>UpFirDn2d: registration, shape function, and the op kernel, which validates the
// inputs, allocates the output and calls the TensorFlow-free kernels (upfirdn2d.h).
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "custom_ops/cc/kernels/upfirdn2d.h"
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

constexpr char kKernel[] = "a 2-D FIR kernel [kh, kw]";

// Output size along one axis when input and kernel sizes are known, else unknown.
absl::Status OutputDim(InferenceContext* c, DimensionHandle in, DimensionHandle k, int up, int down, int pad0,
                       int pad1, const char* axis, DimensionHandle* out) {
  if (!c->ValueKnown(in) || !c->ValueKnown(k)) {
    *out = c->UnknownDim();
    return absl::OkStatus();
  }
  const int64_t size = UpFirDn2dOutputSize(c->Value(in), c->Value(k), up, down, pad0, pad1);
  if (size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "upfirdn2d output ", axis, " would be ", size, " (input ", c->Value(in), ", up ", up, ", pad (", pad0, ", ",
        pad1, "), kernel ", c->Value(k), ", down ", down, "); enlarge the input or the padding."));
  }
  *out = c->MakeDim(size);
  return absl::OkStatus();
}

absl::Status UpFirDn2dShape(InferenceContext* c) {
  int up, down, pad_y0, pad_y1, pad_x0, pad_x1;
  TF_RETURN_IF_ERROR(c->GetAttr("up", &up));
  TF_RETURN_IF_ERROR(c->GetAttr("down", &down));
  TF_RETURN_IF_ERROR(c->GetAttr("pad_y0", &pad_y0));
  TF_RETURN_IF_ERROR(c->GetAttr("pad_y1", &pad_y1));
  TF_RETURN_IF_ERROR(c->GetAttr("pad_x0", &pad_x0));
  TF_RETURN_IF_ERROR(c->GetAttr("pad_x1", &pad_x1));
  if (up < 1 || down < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("upfirdn2d needs up >= 1 and down >= 1, got up=", up, ", down=", down, "."));
  }
  ShapeHandle x, k;
  TF_RETURN_IF_ERROR(InputWithRank(c, 0, 4, "upfirdn2d", kNhwcX, &x));
  TF_RETURN_IF_ERROR(InputWithRank(c, 1, 2, "upfirdn2d", kKernel, &k));
  for (int i = 0; i < 2; ++i) {
    if (c->ValueKnown(c->Dim(k, i)) && c->Value(c->Dim(k, i)) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("upfirdn2d needs a non-empty FIR kernel, got shape ", c->DebugString(k), "."));
    }
  }
  DimensionHandle out_h, out_w;
  TF_RETURN_IF_ERROR(OutputDim(c, c->Dim(x, 1), c->Dim(k, 0), up, down, pad_y0, pad_y1, "height", &out_h));
  TF_RETURN_IF_ERROR(OutputDim(c, c->Dim(x, 2), c->Dim(k, 1), up, down, pad_x0, pad_x1, "width", &out_w));
  c->set_output(0, c->MakeShape({c->Dim(x, 0), out_h, out_w, c->Dim(x, 3)}));
  return absl::OkStatus();
}

}  // namespace

// The attributes both ops take (UpFirDn2dShape and UpFirDn2dAttrs read them), spliced into their
// registrations.
#define TF_DISTILL_UPFIRDN2D_ATTRS \
  .Attr("up: int = 1")             \
      .Attr("down: int = 1")       \
      .Attr("pad_y0: int = 0")     \
      .Attr("pad_y1: int = 0")     \
      .Attr("pad_x0: int = 0")     \
      .Attr("pad_x1: int = 0")

REGISTER_OP("TfDistill>UpFirDn2d")
    .Input("x: T")
    .Input("kernel: T")
    .Output("y: T")
    .Attr("T: {float, half}") TF_DISTILL_UPFIRDN2D_ATTRS
    .SetShapeFn(UpFirDn2dShape)
    .Doc(R"doc(
upfirdn2d on NHWC: zero-insertion upsampling by `up`, padding (negative pads crop) by
(pad_y0, pad_y1) rows and (pad_x0, pad_x1) columns, true 2-D convolution with `kernel`
[kh, kw], and keeping every `down`-th sample. Output height:
(H * up + pad_y0 + pad_y1 - kh) // down + 1 (width likewise).
Its gradient is the same op with the flipped kernel and up/down swapped.
)doc");

// The attributes both ops share, read and checked at construction.
struct UpFirDn2dAttrs {
  int up = 1, down = 1, pad_y0 = 0, pad_y1 = 0, pad_x0 = 0, pad_x1 = 0;

  explicit UpFirDn2dAttrs(tensorflow::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("up", &up));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("down", &down));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_y0", &pad_y0));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_y1", &pad_y1));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_x0", &pad_x0));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_x1", &pad_x1));
    OP_REQUIRES(ctx, up >= 1 && down >= 1,
                absl::InvalidArgumentError(absl::StrCat("upfirdn2d needs up >= 1 and down >= 1, got up=", up,
                                                        ", down=", down, ".")));
  }

  // Checks x and the kernel k against these attributes; fills the kernel's params (all but the
  // epilogue) and the output shape.
  absl::Status Setup(const tensorflow::Tensor& x, const tensorflow::Tensor& k, UpFirDn2dParams* p,
                     tensorflow::TensorShape* out) const {
    if (x.dims() != 4) return ShapeError("upfirdn2d", kNhwcX, x);
    if (k.dims() != 2) return ShapeError("upfirdn2d", kKernel, k);
    if (k.NumElements() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("upfirdn2d needs a non-empty FIR kernel, got shape ", k.shape().DebugString(), "."));
    }
    const int64_t n = x.dim_size(0), in_h = x.dim_size(1), in_w = x.dim_size(2), c = x.dim_size(3);
    const int64_t kh = k.dim_size(0), kw = k.dim_size(1);
    // Every intermediate coordinate is bounded by in*up + |pad0| + |pad1| + k; keep it in int32.
    const int64_t span_h = in_h * up + std::abs(pad_y0) + std::abs(pad_y1) + kh;
    const int64_t span_w = in_w * up + std::abs(pad_x0) + std::abs(pad_x1) + kw;
    if (span_h > kInt32Max || span_w > kInt32Max || kh * kw > kInt32Max) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upfirdn2d sizes overflow int32: input ", x.shape().DebugString(), ", up ", up, ", pads (", pad_y0, ", ",
          pad_y1, ", ", pad_x0, ", ", pad_x1, "), kernel ", k.shape().DebugString(), "."));
    }
    const int64_t out_h = UpFirDn2dOutputSize(in_h, kh, up, down, pad_y0, pad_y1);
    const int64_t out_w = UpFirDn2dOutputSize(in_w, kw, up, down, pad_x0, pad_x1);
    if (out_h < 1 || out_w < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upfirdn2d output would be ", out_h, "x", out_w, " (input ", x.shape().DebugString(), ", up ", up,
          ", down ", down, ", pad y (", pad_y0, ", ", pad_y1, "), pad x (", pad_x0, ", ", pad_x1, "), kernel ",
          k.shape().DebugString(), "); enlarge the input or the padding."));
    }
    if (x.NumElements() > kInt32Max || n * out_h * out_w * c > kInt32Max) {
      return absl::InvalidArgumentError(absl::StrCat(
          "upfirdn2d supports tensors of at most 2^31-1 elements (int32 indexing); input ", x.shape().DebugString(),
          ", output [", n, ",", out_h, ",", out_w, ",", c, "]. Split the batch."));
    }
    p->n = static_cast<int>(n);
    p->in_h = static_cast<int>(in_h);
    p->in_w = static_cast<int>(in_w);
    p->c = static_cast<int>(c);
    p->out_h = static_cast<int>(out_h);
    p->out_w = static_cast<int>(out_w);
    p->kh = static_cast<int>(kh);
    p->kw = static_cast<int>(kw);
    p->up = up;
    p->down = down;
    p->pad_y0 = pad_y0;
    p->pad_x0 = pad_x0;
    *out = tensorflow::TensorShape({n, out_h, out_w, c});
    return absl::OkStatus();
  }
};

template <typename Device, typename T>
class UpFirDn2dOp : public tensorflow::OpKernel {
 public:
  explicit UpFirDn2dOp(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx), attrs_(ctx) {}

  void Compute(tensorflow::OpKernelContext* ctx) override {
    UpFirDn2dParams p;
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, attrs_.Setup(ctx->input(0), ctx->input(1), &p, &out_shape));
    tensorflow::Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &y));
    if (y->NumElements() == 0) return;
    const std::string err = Run(ctx, static_cast<const Device*>(nullptr), p, KernelData<T>(ctx->input(0)),
                                KernelData<T>(ctx->input(1)), KernelData<T>(y));
    OP_REQUIRES(ctx, err.empty(), absl::InternalError(absl::StrCat("upfirdn2d: ", err)));
  }

 private:
  template <typename K>
  static std::string Run(tensorflow::OpKernelContext* ctx, const CPUDevice*, const UpFirDn2dParams& p, const K* x,
                         const K* k, K* y) {
    UpFirDn2dCpu(EigenCpuRunner(ctx->eigen_cpu_device()), p, x, k, y);
    return std::string();
  }
#if GOOGLE_CUDA
  template <typename K>
  static std::string Run(tensorflow::OpKernelContext* ctx, const GPUDevice*, const UpFirDn2dParams& p, const K* x,
                         const K* k, K* y) {
    return UpFirDn2dGpu(ctx->eigen_gpu_device().stream(), p, x, k, y);
  }
#endif

  UpFirDn2dAttrs attrs_;
};

#define TF_DISTILL_REGISTER_CPU(T)                                                              \
  REGISTER_KERNEL_BUILDER(Name("TfDistill>UpFirDn2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
                          UpFirDn2dOp<CPUDevice, T>);
TF_DISTILL_REGISTER_CPU(float);
TF_DISTILL_REGISTER_CPU(Eigen::half);
#undef TF_DISTILL_REGISTER_CPU

#if GOOGLE_CUDA
#define TF_DISTILL_REGISTER_GPU(T)                                                              \
  REGISTER_KERNEL_BUILDER(Name("TfDistill>UpFirDn2d").Device(tensorflow::DEVICE_GPU).TypeConstraint<T>("T"), \
                          UpFirDn2dOp<GPUDevice, T>);
TF_DISTILL_REGISTER_GPU(float);
TF_DISTILL_REGISTER_GPU(Eigen::half);
#undef TF_DISTILL_REGISTER_GPU
#endif  // GOOGLE_CUDA

REGISTER_OP("TfDistill>UpFirDn2dEpilogue")
    .Input("x: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Input("noise: float")
    .Input("noise_strength: float")
    .Input("scale: float")
    .Output("y: float") TF_DISTILL_UPFIRDN2D_ATTRS
    .Attr("activation: {'linear', 'lrelu'} = 'linear'")
    .Attr("alpha: float = 0.2")
    .SetShapeFn(UpFirDn2dShape)
    .Doc(R"doc(
upfirdn2d (as TfDistill>UpFirDn2d), then StyleGAN2's epilogue on its output: times scale [n, c] (per
sample and channel; empty: none), + bias [c] (empty: none),
+ noise_strength (a scalar) * noise [1 or n, out_h, out_w, 1] (empty: none), and the activation (lrelu:
slope `alpha` below zero), applied to a few rows at a time as they are written instead of in passes
of their own. CPU, float32 only; its gradients are registered in Python as those of the reference
(tf_distill/ops/upfirdn2d.py).
)doc");

class UpFirDn2dEpilogueOp : public tensorflow::OpKernel {
 public:
  explicit UpFirDn2dEpilogueOp(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx), attrs_(ctx) {
    OP_REQUIRES_OK(ctx, ReadActivation(ctx, &lrelu_, &alpha_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    UpFirDn2dParams p;
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, attrs_.Setup(ctx->input(0), ctx->input(1), &p, &out_shape));
    OP_REQUIRES_OK(ctx, ReadEpilogue(ctx, 2, "upfirdn2d", p.n, p.out_h, p.out_w, p.c, lrelu_, alpha_, &p.epilogue));
    OP_REQUIRES_OK(ctx, ReadEpilogueScale(ctx, 5, "upfirdn2d", p.n, p.c, &p.epilogue));
    tensorflow::Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &y));
    if (y->NumElements() == 0) return;
    UpFirDn2dCpu(EigenCpuRunner(ctx->eigen_cpu_device()), p, ctx->input(0).flat<float>().data(),
                 ctx->input(1).flat<float>().data(), y->flat<float>().data());
  }

 private:
  UpFirDn2dAttrs attrs_;
  bool lrelu_ = false;
  float alpha_ = 0.2f;
};

REGISTER_KERNEL_BUILDER(Name("TfDistill>UpFirDn2dEpilogue").Device(tensorflow::DEVICE_CPU), UpFirDn2dEpilogueOp);

}  // namespace tf_distill
