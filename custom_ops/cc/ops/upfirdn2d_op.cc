// Op registration and shape function of TfDistill>UpFirDn2d.
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tf_distill {

using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output size along one axis when input and kernel sizes are known, else unknown.
absl::Status OutputDim(InferenceContext* c, DimensionHandle in, DimensionHandle k, int up, int down, int pad0,
                       int pad1, const char* axis, DimensionHandle* out) {
  if (!c->ValueKnown(in) || !c->ValueKnown(k)) {
    *out = c->UnknownDim();
    return absl::OkStatus();
  }
  const int64_t size = FloorDiv(c->Value(in) * up + pad0 + pad1 - c->Value(k), down) + 1;
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
  if (!c->WithRank(c->input(0), 4, &x).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("upfirdn2d expects x of rank 4 (NHWC), got shape ", c->DebugString(c->input(0)), "."));
  }
  if (!c->WithRank(c->input(1), 2, &k).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("upfirdn2d expects a 2-D FIR kernel [kh, kw], got shape ", c->DebugString(c->input(1)), "."));
  }
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

REGISTER_OP("TfDistill>UpFirDn2d")
    .Input("x: T")
    .Input("kernel: T")
    .Output("y: T")
    .Attr("T: {float, half}")
    .Attr("up: int = 1")
    .Attr("down: int = 1")
    .Attr("pad_y0: int = 0")
    .Attr("pad_y1: int = 0")
    .Attr("pad_x0: int = 0")
    .Attr("pad_x1: int = 0")
    .SetShapeFn(UpFirDn2dShape)
    .Doc(R"doc(
upfirdn2d on NHWC: zero-insertion upsampling by `up`, padding (negative pads crop) by
(pad_y0, pad_y1) rows and (pad_x0, pad_x1) columns, true 2-D convolution with `kernel`
[kh, kw], and keeping every `down`-th sample. Output height:
(H * up + pad_y0 + pad_y1 - kh) // down + 1 (width likewise).
Its gradient is the same op with the flipped kernel and up/down swapped.
)doc");

}  // namespace tf_distill
