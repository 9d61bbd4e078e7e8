// Op registrations and shape functions of TfDistill>FusedBiasAct and its gradient op.
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_distill {

using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

absl::Status FusedBiasActShape(InferenceContext* c) {
  ShapeHandle x = c->input(0), b;
  if (c->RankKnown(x) && c->Rank(x) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fused_bias_act expects x of rank >= 1 (bias on the last axis), got shape ", c->DebugString(x), "."));
  }
  if (!c->WithRank(c->input(1), 1, &b).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fused_bias_act expects a 1-D bias, got shape ", c->DebugString(c->input(1)), "."));
  }
  if (c->RankKnown(x) && c->ValueKnown(c->Dim(b, 0)) && c->ValueKnown(c->Dim(x, -1))) {
    const int64_t nb = c->Value(c->Dim(b, 0)), nc = c->Value(c->Dim(x, -1));
    if (nb != 0 && nb != nc) {
      return absl::InvalidArgumentError(absl::StrCat("fused_bias_act expects a bias of shape [", nc,
                                                     "] (the last axis of x ", c->DebugString(x),
                                                     ") or [0] for no bias, got shape ", c->DebugString(b), "."));
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

}  // namespace tf_distill
