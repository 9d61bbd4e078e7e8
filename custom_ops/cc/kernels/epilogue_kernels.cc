// The CPU kernel of the epilogue (epilogue.h): upfirdn2d's epilogue on the rows it has just written, and
// the standalone epilogue op's one pass after a conv of TensorFlow's. Vectorized (cpu_isa.h), no
// TensorFlow header.
#include <cstdint>
#include <cstring>

#include "custom_ops/cc/kernels/cpu_isa.h"
#include "custom_ops/cc/kernels/epilogue.h"

namespace tf_distill {

namespace {

// v * scale + bias + strength * noise, then v > 0 ? v : v * alpha (alpha 1 without the activation: the same
// value). Vectors V of channels, then plain loops for the rest; the absent parts are skipped by branches
// that are the same for every vector; the vector select is a blend (GCC keeps a scalar `?:` a branch, which
// mispredicts on signed activations: 5x slower).
template <typename V>
__attribute__((always_inline)) inline void EpilogueRowsImpl(const Epilogue& e, int h, int w, int c, const float* x,
                                                            float* y, int64_t begin, int64_t end) {
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float));
  const int vector_end = c / kLanes * kLanes;
  const float alpha = e.lrelu ? e.alpha : 1.0f;
  const float* bias = e.bias;
  const V zero = {};
  for (int64_t row = begin; row < end; ++row) {
    const int img = static_cast<int>(row / h);
    const float* noise_row = e.NoiseRow(img, static_cast<int>(row % h), h, w);
    const float* scale = e.scale != nullptr ? e.scale + static_cast<int64_t>(img) * c : nullptr;
    const float* in = x + row * w * c;
    float* out = y + row * w * c;
    for (int col = 0; col < w; ++col, in += c, out += c) {
      const float nz = noise_row != nullptr ? e.noise_strength * noise_row[col] : 0.0f;
      int ch = 0;
      for (; ch < vector_end; ch += kLanes) {
        V t;
        std::memcpy(&t, in + ch, sizeof(V));
        if (scale != nullptr) {
          V s;
          std::memcpy(&s, scale + ch, sizeof(V));
          t = t * s;
        }
        if (bias != nullptr) {
          V b;
          std::memcpy(&b, bias + ch, sizeof(V));
          t = t + b;
        }
        t = t + nz;
        const V scaled = t * alpha;
        t = t > zero ? t : scaled;
        std::memcpy(out + ch, &t, sizeof(V));
      }
      for (; ch < c; ++ch) {
        float t = scale != nullptr ? in[ch] * scale[ch] : in[ch];
        t = (bias != nullptr ? t + bias[ch] : t) + nz;
        out[ch] = t > 0.0f ? t : t * alpha;
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void EpilogueRowsAvx2(const Epilogue& e, int h, int w, int c, const float* x,
                                                          float* y, int64_t begin, int64_t end) {
  EpilogueRowsImpl<Vec8>(e, h, w, c, x, y, begin, end);
}
#endif

}  // namespace

void EpilogueRows(const Epilogue& e, int h, int w, int c, const float* x, float* y, int64_t begin, int64_t end) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (UseAvx2()) {
    EpilogueRowsAvx2(e, h, w, c, x, y, begin, end);
    return;
  }
#endif
  EpilogueRowsImpl<Vec4>(e, h, w, c, x, y, begin, end);
}

void EpilogueCpu(const CpuRunner& runner, const Epilogue& e, int n, int h, int w, int c, const float* x, float* y) {
  const double row = static_cast<double>(w) * c;
  const CpuCost cost{row * sizeof(float), row * sizeof(float), row * 4};
  runner.ParallelFor(static_cast<int64_t>(n) * h, cost, 1,
                     [&](int64_t begin, int64_t end) { EpilogueRows(e, h, w, c, x, y, begin, end); });
}

}  // namespace tf_distill
