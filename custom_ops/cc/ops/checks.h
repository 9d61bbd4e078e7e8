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

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_OPS_CHECKS_H_
