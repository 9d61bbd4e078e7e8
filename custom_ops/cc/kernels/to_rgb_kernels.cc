// The CPU kernel of to_rgb (to_rgb.h): one pass per output row, vectorized over input channels
// for AVX2 + FMA, multithreaded through a CpuRunner, no TensorFlow header.
//
// Per pixel, the k <= 4 dot products over the channels run in k vector accumulators (the sample's
// weight transposed to [k, c] once per call, so each output channel's weights are contiguous, each
// row zero-padded to a multiple of 8), and three horizontal adds reduce them to k sums. A width that
// is no multiple of 8 (the pruned 154 channels) ends in one masked load of its last channels. The
// skip's separable 2x upsampling runs with upfirdn2d's tap tables: per output row its row taps are
// summed into a skip-width row, and per pixel the (two, for the 4-tap StyleGAN kernel) column taps of
// that row are added to the sums.
#include "custom_ops/cc/kernels/to_rgb.h"

#include <cstdint>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "custom_ops/cc/kernels/cpu_isa.h"
#include "custom_ops/cc/kernels/per_sample.h"
#include "custom_ops/cc/kernels/upfirdn2d.h"

namespace tf_distill {

namespace {

constexpr int kMaxVectorK = 4;  // output channels the vector path takes (one 128-bit lane of sums)

struct RowArgs {
  const ToRgbParams* p;
  const float* x;
  const float* weight_t;  // [n, k, c_padded]: each sample's weight transposed, rows zero-padded
  int c_padded;           // c rounded up to a multiple of 8
  float* y;
  const AxisTaps* ty;  // skip taps, when there is a skip
  const AxisTaps* tx;
};

// The skip's row taps for output row `i` summed into `tmp` [skip_w, k] (the vertical pass of the
// separable upsampling); its horizontal pass runs per output pixel.
void VerticalSkipRow(const RowArgs& a, const float* skip_n, int i, float* tmp) {
  const ToRgbParams& p = *a.p;
  const int64_t len = static_cast<int64_t>(p.skip_w) * p.k;
  for (int64_t e = 0; e < len; ++e) tmp[e] = 0.0f;
  for (int r = a.ty->begin[i]; r < a.ty->begin[i + 1]; ++r) {
    const float* skip_row = skip_n + static_cast<int64_t>(a.ty->in[r]) * len;
    const float ky = p.skip_kernel[a.ty->k[r]];
    for (int64_t e = 0; e < len; ++e) tmp[e] += ky * skip_row[e];
  }
}

// Plain loops, any c and k: the path for CPUs without AVX2 and for other shapes. `tmp`: the
// vertically filtered skip row, or nullptr.
void RowScalar(const RowArgs& a, int b, const float* x_row, const float* tmp, float* y_row) {
  const ToRgbParams& p = *a.p;
  const float* wt = a.weight_t + static_cast<int64_t>(b) * p.k * a.c_padded;
  for (int j = 0; j < p.w; ++j) {
    float* out = y_row + static_cast<int64_t>(j) * p.k;
    const float* xp = x_row + static_cast<int64_t>(j) * p.c;
    for (int o = 0; o < p.k; ++o) {
      const float* wo = wt + static_cast<int64_t>(o) * a.c_padded;
      float sum = p.bias != nullptr ? p.bias[o] : 0.0f;
      if (tmp != nullptr) {
        for (int t = a.tx->begin[j]; t < a.tx->begin[j + 1]; ++t) {
          sum += p.skip_kernel[a.tx->k[t]] * tmp[static_cast<int64_t>(a.tx->in[t]) * p.k + o];
        }
      }
      for (int e = 0; e < p.c; ++e) sum += xp[e] * wo[e];
      out[o] = sum;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)

// The vector path: the K sums of a pixel, its bias and skip taps in one 128-bit vector (lanes past K
// unused), stored as 4 floats (the next pixel's store overwrites the extra ones; the row's last pixel
// stores K). `tmp` (nullptr: no skip) has kMaxVectorK floats of room after its skip_w * K.
template <int K>
__attribute__((target("avx2,fma"))) void RowAvx2(const RowArgs& a, int b, const float* x_row, const float* tmp,
                                                 float* y_row) {
  const ToRgbParams& p = *a.p;
  const int ldw = a.c_padded;
  const float* wt = a.weight_t + static_cast<int64_t>(b) * K * ldw;
  const int full = p.c & ~7;  // channels in whole vectors; the rest in one masked load
  alignas(32) int lanes[8];
  for (int e = 0; e < 8; ++e) lanes[e] = e < p.c - full ? -1 : 0;
  const __m256i tail = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
  float bias4[kMaxVectorK] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int o = 0; o < K && p.bias != nullptr; ++o) bias4[o] = p.bias[o];
  const __m128 bias = _mm_loadu_ps(bias4);
  const int* begin = a.tx->begin.data();
  const int* in = a.tx->in.data();
  const int* taps = a.tx->k.data();
  for (int j = 0; j < p.w; ++j) {
    const float* xp = x_row + static_cast<int64_t>(j) * p.c;
    __m256 acc[kMaxVectorK];
#pragma GCC unroll 4
    for (int o = 0; o < kMaxVectorK; ++o) acc[o] = _mm256_setzero_ps();
    for (int e = 0; e < full; e += 8) {
      const __m256 xv = _mm256_loadu_ps(xp + e);
#pragma GCC unroll 4
      for (int o = 0; o < K; ++o) acc[o] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wt + o * ldw + e), acc[o]);
    }
    if (full < p.c) {  // the weights past c are zeros; x is not read past its pixel
      const __m256 xv = _mm256_maskload_ps(xp + full, tail);
#pragma GCC unroll 4
      for (int o = 0; o < K; ++o) acc[o] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wt + o * ldw + full), acc[o]);
    }
    // [a0, a1, a2, a3] -> the four sums in one 128-bit vector.
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
    __m128 v = _mm_add_ps(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)), bias);
    if (tmp != nullptr) {
      for (int t = begin[j]; t < begin[j + 1]; ++t) {
        v = _mm_fmadd_ps(_mm_set1_ps(p.skip_kernel[taps[t]]), _mm_loadu_ps(tmp + in[t] * K), v);
      }
    }
    float* out = y_row + static_cast<int64_t>(j) * K;
    if (j + 1 < p.w) {
      _mm_storeu_ps(out, v);
    } else {
      float last[kMaxVectorK];
      _mm_storeu_ps(last, v);
#pragma GCC unroll 4
      for (int o = 0; o < K; ++o) out[o] = last[o];
    }
  }
}

#endif  // __x86_64__ && __GNUC__

void Rows(const RowArgs& a, int64_t begin, int64_t end) {
  const ToRgbParams& p = *a.p;
  std::vector<float> tmp(p.skip == nullptr ? 0 : static_cast<size_t>(p.skip_w) * p.k + kMaxVectorK, 0.0f);
  for (int64_t row = begin; row < end; ++row) {
    const int b = static_cast<int>(row / p.h), i = static_cast<int>(row % p.h);
    const float* x_row = a.x + row * p.w * p.c;
    float* y_row = a.y + row * p.w * p.k;
    const float* skip_row = nullptr;
    if (p.skip != nullptr) {
      VerticalSkipRow(a, p.skip + static_cast<int64_t>(b) * p.skip_h * p.skip_w * p.k, i, tmp.data());
      skip_row = tmp.data();
    }
#if defined(__x86_64__) && defined(__GNUC__)
    if (UseAvx2() && p.k <= kMaxVectorK) {
      switch (p.k) {
        case 1: RowAvx2<1>(a, b, x_row, skip_row, y_row); continue;
        case 2: RowAvx2<2>(a, b, x_row, skip_row, y_row); continue;
        case 3: RowAvx2<3>(a, b, x_row, skip_row, y_row); continue;
        case 4: RowAvx2<4>(a, b, x_row, skip_row, y_row); continue;
        default: break;
      }
    }
#endif
    RowScalar(a, b, x_row, skip_row, y_row);
  }
}

}  // namespace

void ToRgbCpu(const CpuRunner& runner, const ToRgbParams& p, const float* x, const float* weight, float* y) {
  const int c_padded = (p.c + 7) / 8 * 8;
  const std::vector<float> weight_t = TransposeEachSample(weight, p.n, p.c, p.k, c_padded);
  AxisTaps ty, tx;
  if (p.skip != nullptr) {
    ty = MakeAxisTaps(p.h, p.skip_h, p.kernel_size, 2, 1, p.pad0);
    tx = MakeAxisTaps(p.w, p.skip_w, p.kernel_size, 2, 1, p.pad0);
  }
  const RowArgs a{&p, x, weight_t.data(), c_padded, y, &ty, &tx};
  const double per_row = static_cast<double>(p.w);
  const CpuCost cost{per_row * p.c * sizeof(float), per_row * p.k * sizeof(float), per_row * (p.c * p.k / 8.0 + 16)};
  runner.ParallelFor(static_cast<int64_t>(p.n) * p.h, cost, 1, [&a](int64_t begin, int64_t end) { Rows(a, begin, end); });
}

}  // namespace tf_distill
