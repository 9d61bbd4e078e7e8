// The epilogue StyleGAN2 applies after a conv, which the CPU kernels apply to their outputs
// before a later pass would (conv3x3 to its sums in registers, upfirdn2d to rows it has just
// written), or the standalone epilogue op in one pass after a conv of TensorFlow's:
// y = act(v * scale[sample, o] + bias[o] + noise_strength * noise[pixel]), act = leaky ReLU with
// slope `alpha` when `lrelu`, else none. float32 only.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_EPILOGUE_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_EPILOGUE_H_

#include <cstdint>

#include "custom_ops/cc/kernels/parallel.h"

namespace tf_distill {

struct Epilogue {
  // [n, channels] (a modulated conv's demodulation, per sample), or nullptr. Applied by EpilogueRows
  // only: conv3x3 folds it into its per-sample weights and leaves it null (Value ignores it).
  const float* scale = nullptr;
  const float* bias = nullptr;   // [channels], or nullptr
  const float* noise = nullptr;  // [noise_n, out_h, out_w], or nullptr
  int noise_n = 1;               // 1 (shared by the batch) or the batch size
  float noise_strength = 0.0f;
  bool lrelu = false;
  float alpha = 0.0f;

  bool Active() const { return scale != nullptr || bias != nullptr || noise != nullptr || lrelu; }

  // Output row `row` (of out_h) of sample `img`'s noise, or nullptr.
  const float* NoiseRow(int img, int row, int out_h, int out_w) const {
    return noise == nullptr ? nullptr : noise + (static_cast<int64_t>(noise_n == 1 ? 0 : img) * out_h + row) * out_w;
  }

  // One value of channel o at column col of a row whose noise is noise_row (nullptr: none).
  float Value(const float* noise_row, int col, int o, float v) const {
    if (bias != nullptr) v += bias[o];
    if (noise_row != nullptr) v += noise_strength * noise_row[col];
    return lrelu && !(v > 0.0f) ? v * alpha : v;
  }
};

// Rows [begin, end) of the flattened (n, h) range of x [n, h, w, c] through the epilogue into y (which may
// be x: in place), vectorized (epilogue_kernels.cc).
void EpilogueRows(const Epilogue& e, int h, int w, int c, const float* x, float* y, int64_t begin, int64_t end);

// All of x [n, h, w, c] through the epilogue into y, sharded over rows by `runner`.
void EpilogueCpu(const CpuRunner& runner, const Epilogue& e, int n, int h, int w, int c, const float* x, float* y);

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_EPILOGUE_H_
