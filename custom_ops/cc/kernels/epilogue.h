// The epilogue StyleGAN2 applies after a conv, which the CPU kernels apply to their outputs
// before a later pass would (conv3x3 to its sums in registers, upfirdn2d to rows it has just
// written): y = act(v + bias[o] + noise_strength * noise[pixel]), act = leaky ReLU with slope
// `alpha` when `lrelu`, else none. float32 only.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_EPILOGUE_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_EPILOGUE_H_

#include <cstdint>

namespace tf_distill {

struct Epilogue {
  const float* bias = nullptr;   // [channels], or nullptr
  const float* noise = nullptr;  // [noise_n, out_h, out_w], or nullptr
  int noise_n = 1;               // 1 (shared by the batch) or the batch size
  float noise_strength = 0.0f;
  bool lrelu = false;
  float alpha = 0.0f;

  bool Active() const { return bias != nullptr || noise != nullptr || lrelu; }

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

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_EPILOGUE_H_
