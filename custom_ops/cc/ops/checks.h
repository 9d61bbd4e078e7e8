// The argument checks the op wrappers share. A wrong shape gets one message form,
// "<op> expects <what>, got shape <shape>.", from the shape function (when the graph is built) and
// from the kernel (for shapes known only when it runs), so a user sees the same line either way.
#ifndef TF_DISTILL_CUSTOM_OPS_OPS_CHECKS_H_
#define TF_DISTILL_CUSTOM_OPS_OPS_CHECKS_H_

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "custom_ops/cc/kernels/epilogue.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tf_distill {

// The kernels index with int32 (faster on both devices): every element count they see must fit.
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// What the image ops expect of their input.
constexpr char kNhwcX[] = "x of rank 4 (NHWC)";

inline absl::Status ShapeError(absl::string_view op, absl::string_view what, absl::string_view shape) {
  return absl::InvalidArgumentError(absl::StrCat(op, " expects ", what, ", got shape ", shape, "."));
}

// The kernel-side message for tensor `t`.
inline absl::Status ShapeError(absl::string_view op, absl::string_view what, const tensorflow::Tensor& t) {
  return ShapeError(op, what, t.shape().DebugString());
}

// Shape function: input `i` has rank `rank` (returned in `out`), else ShapeError.
inline absl::Status InputWithRank(tensorflow::shape_inference::InferenceContext* c, int i, int rank,
                                  absl::string_view op, absl::string_view what,
                                  tensorflow::shape_inference::ShapeHandle* out) {
  if (c->WithRank(c->input(i), rank, out).ok()) return absl::OkStatus();
  return ShapeError(op, what, c->DebugString(c->input(i)));
}

// An optional bias of an op with k output channels: [k], or empty for none (*data nullptr).
inline absl::Status ReadOptionalBias(const tensorflow::Tensor& bias, absl::string_view op, int64_t k,
                                     const float** data) {
  if (bias.NumElements() != 0 && !(bias.dims() == 1 && bias.dim_size(0) == k)) {
    return ShapeError(op, absl::StrCat("a bias [", k, "] or an empty one"), bias);
  }
  *data = bias.NumElements() > 0 ? bias.flat<float>().data() : nullptr;
  return absl::OkStatus();
}

// The epilogue inputs of an op with a [n, out_h, out_w, k] output: bias [k] or empty, noise
// [1 or n, out_h, out_w, 1] or empty, noise_strength (one value), at inputs first, first + 1 and
// first + 2, checked and read into `e` with the op's activation.
inline absl::Status ReadEpilogue(tensorflow::OpKernelContext* ctx, int first, absl::string_view op, int64_t n,
                                 int64_t out_h, int64_t out_w, int64_t k, bool lrelu, float alpha, Epilogue* e) {
  const tensorflow::Tensor& noise = ctx->input(first + 1);
  const tensorflow::Tensor& strength = ctx->input(first + 2);
  TF_RETURN_IF_ERROR(ReadOptionalBias(ctx->input(first), op, k, &e->bias));
  const bool has_noise = noise.NumElements() > 0;
  if (has_noise && !(noise.dims() == 4 && (noise.dim_size(0) == 1 || noise.dim_size(0) == n) &&
                     noise.dim_size(1) == out_h && noise.dim_size(2) == out_w && noise.dim_size(3) == 1)) {
    return ShapeError(op, absl::StrCat("noise [1 or ", n, ", ", out_h, ", ", out_w, ", 1] or an empty one"), noise);
  }
  if (strength.NumElements() != 1) return ShapeError(op, "one noise_strength value", strength);
  e->noise = has_noise ? noise.flat<float>().data() : nullptr;
  e->noise_n = has_noise ? static_cast<int>(noise.dim_size(0)) : 1;
  e->noise_strength = strength.flat<float>()(0);
  e->lrelu = lrelu;
  e->alpha = alpha;
  return absl::OkStatus();
}

// The epilogue's activation attributes of an op: `activation` ("linear" or "lrelu") and `alpha`.
inline absl::Status ReadActivation(tensorflow::OpKernelConstruction* ctx, bool* lrelu, float* alpha) {
  std::string activation;
  TF_RETURN_IF_ERROR(ctx->GetAttr("activation", &activation));
  TF_RETURN_IF_ERROR(ctx->GetAttr("alpha", alpha));
  *lrelu = activation == "lrelu";
  return absl::OkStatus();
}

// The optional epilogue scale of an op with n samples of k channels, at input `index`: [n, k], or empty for
// none, read into `e`.
inline absl::Status ReadEpilogueScale(tensorflow::OpKernelContext* ctx, int index, absl::string_view op, int64_t n,
                                      int64_t k, Epilogue* e) {
  const tensorflow::Tensor& scale = ctx->input(index);
  if (scale.NumElements() != 0 && !(scale.dims() == 2 && scale.dim_size(0) == n && scale.dim_size(1) == k)) {
    return ShapeError(op, absl::StrCat("a scale [", n, ", ", k, "] or an empty one"), scale);
  }
  e->scale = scale.NumElements() > 0 ? scale.flat<float>().data() : nullptr;
  return absl::OkStatus();
}

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_OPS_CHECKS_H_
