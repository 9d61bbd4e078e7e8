// Per-sample weight layouts the CPU kernels share: TensorFlow hands them each sample's matrix as
// [inputs, outputs], their inner loops want one output's weights contiguous.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_PER_SAMPLE_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_PER_SAMPLE_H_

#include <cstddef>
#include <vector>

namespace tf_distill {

// Each of the n row-major [rows, cols] matrices of src transposed to [cols, ld] (ld >= rows; the
// columns from rows on zero), one after the other.
inline std::vector<float> TransposeEachSample(const float* src, int n, int rows, int cols, int ld) {
  std::vector<float> dst(static_cast<size_t>(n) * cols * ld, 0.0f);
  for (int b = 0; b < n; ++b) {
    const float* s = src + static_cast<size_t>(b) * rows * cols;
    float* d = dst.data() + static_cast<size_t>(b) * cols * ld;
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) d[static_cast<size_t>(c) * ld + r] = s[static_cast<size_t>(r) * cols + c];
    }
  }
  return dst;
}

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_PER_SAMPLE_H_
