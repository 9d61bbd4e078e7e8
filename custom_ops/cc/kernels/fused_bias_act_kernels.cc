// The CPU kernels of fused_bias_act (fused_bias_act.h): vectorized (cpu_isa.h), multithreaded
// through a CpuRunner, no TensorFlow header. The CUDA kernels are in fused_bias_act_kernels.cu.
#include "custom_ops/cc/kernels/fused_bias_act.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "custom_ops/cc/kernels/cpu_isa.h"

namespace tf_distill {

namespace {

// Inlined into both the baseline and the AVX2 entry points below.
#define TF_DISTILL_INLINE __attribute__((always_inline)) inline

// Branch-free elementwise loops over [0, n) on restrict pointers, which the compiler
// vectorizes (the data-dependent sign test would otherwise mispredict half the time).
// In-place use (y == x, dx == dy) is fine: every element is read before it is written.
template <typename T>
TF_DISTILL_INLINE void LReLUSpan(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y, int64_t n,
                                 float alpha, float gain) {
  for (int64_t j = 0; j < n; ++j) {
    float v = static_cast<float>(x[j]);
    if (b != nullptr) v += static_cast<float>(b[j]);
    // max(v, 0) + alpha * min(v, 0) equals (v > 0 ? v : alpha * v) exactly.
    y[j] = static_cast<T>((std::max(v, 0.0f) + alpha * std::min(v, 0.0f)) * gain);
  }
}

template <typename T>
TF_DISTILL_INLINE void LinearSpan(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y, int64_t n,
                                  float gain) {
  for (int64_t j = 0; j < n; ++j) {
    float v = static_cast<float>(x[j]);
    if (b != nullptr) v += static_cast<float>(b[j]);
    y[j] = static_cast<T>(v * gain);
  }
}

// act(x + b) * gain over [0, n) in vectors V with non-temporal stores: n a multiple of the
// vector width, y aligned to it, y not x (float only; see FusedBiasActFunctor).
template <typename V>
TF_DISTILL_INLINE void BiasActSpanStream(const float* x, const float* b, float* y, int64_t n, bool linear,
                                         float alpha, float gain) {
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float));
  const V zero = V{};
  for (int64_t j = 0; j < n; j += kLanes) {
    V v;
    std::memcpy(&v, x + j, sizeof(V));
    if (b != nullptr) {
      V bv;
      std::memcpy(&bv, b + j, sizeof(V));
      v += bv;
    }
    if (!linear) v = v > zero ? v : v * alpha;
    StreamStore(y + j, v * gain);
  }
}

// Elements [begin, end) of the flattened [rows, channels] tensor, in spans that do not
// cross a row so the bias is read contiguously. `stream`: write y with non-temporal stores
// (float only, and only when every span is whole vectors V on an aligned y).
template <typename T, typename V = Vec4>
TF_DISTILL_INLINE void BiasActRange(const FusedBiasActParams& p, const T* x, const T* b, T* y, int64_t begin,
                                    int64_t end, bool stream) {
  const float alpha = p.alpha, gain = p.gain;
  const bool linear = p.linear;
  if constexpr (std::is_same<T, float>::value) {
    if (stream) {
      const int64_t channels = p.has_bias ? p.channels : end - begin;  // spans: rows, or the whole range
      for (int64_t i = begin, c = p.has_bias ? begin % channels : 0; i < end; c = 0) {
        const int64_t len = std::min<int64_t>(end - i, channels - c);
        BiasActSpanStream<V>(x + i, p.has_bias ? b + c : nullptr, y + i, len, linear, alpha, gain);
        i += len;
      }
      __builtin_ia32_sfence();  // streamed stores are visible before the op completes
      return;
    }
  }
  if (!p.has_bias) {
    if (linear) {
      LinearSpan<T>(x + begin, nullptr, y + begin, end - begin, gain);
    } else {
      LReLUSpan<T>(x + begin, nullptr, y + begin, end - begin, alpha, gain);
    }
    return;
  }
  const int64_t channels = p.channels;
  int64_t i = begin;
  int64_t c = i % channels;
  while (i < end) {
    const int64_t len = std::min<int64_t>(end - i, channels - c);
    if (linear) {
      LinearSpan<T>(x + i, b + c, y + i, len, gain);
    } else {
      LReLUSpan<T>(x + i, b + c, y + i, len, alpha, gain);
    }
    i += len;
    c = 0;
  }
}

template <typename T>
TF_DISTILL_INLINE void GradSpan(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, int64_t n,
                                float pos_slope, float neg_slope, float sign) {
  // sign * y > 0 selects the positive branch (sign = -1 when gain < 0).
  for (int64_t i = 0; i < n; ++i) {
    const float s = sign * static_cast<float>(y[i]) > 0.0f ? pos_slope : neg_slope;
    dx[i] = static_cast<T>(static_cast<float>(dy[i]) * s);
  }
}

// The same for one row of `n` channels, adding dx (as stored) to the per-channel sums.
template <typename T>
TF_DISTILL_INLINE void GradSpanSum(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx,
                                   float* __restrict__ sum, int64_t n, float pos_slope, float neg_slope,
                                   float sign) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = sign * static_cast<float>(y[i]) > 0.0f ? pos_slope : neg_slope;
    const T g = static_cast<T>(static_cast<float>(dy[i]) * s);
    dx[i] = g;
    sum[i] += static_cast<float>(g);
  }
}

struct GradSlopes {
  float pos, neg, sign;
  explicit GradSlopes(const FusedBiasActParams& p)
      : pos(p.gain), neg(p.linear ? p.gain : p.gain * p.alpha), sign(p.gain >= 0.0f ? 1.0f : -1.0f) {}
};

template <typename T>
TF_DISTILL_INLINE void BiasActGradRange(const FusedBiasActParams& p, const T* dy, const T* y, T* dx, int64_t begin,
                                        int64_t end) {
  const GradSlopes s(p);
  GradSpan<T>(dy + begin, y + begin, dx + begin, end - begin, s.pos, s.neg, s.sign);
}

// Rows [r0, r1) of dy/y/dx viewed as [rows, channels], summing dx into `sum` (channels floats).
template <typename T>
TF_DISTILL_INLINE void GradRowsSum(const FusedBiasActParams& p, const T* dy, const T* y, T* dx, float* sum, int64_t r0,
                                   int64_t r1) {
  const GradSlopes s(p);
  const int64_t channels = p.channels;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * channels;
    GradSpanSum<T>(dy + o, y + o, dx + o, sum, channels, s.pos, s.neg, s.sign);
  }
}

// float loops compiled for AVX2 + FMA as well, picked at run time (see upfirdn2d_kernels.cc).
#if defined(__x86_64__) && defined(__GNUC__)
#define TF_DISTILL_AVX2 __attribute__((target("avx2,fma")))
TF_DISTILL_AVX2 void BiasActRangeAvx2(const FusedBiasActParams& p, const float* x, const float* b, float* y,
                                      int64_t begin, int64_t end, bool stream) {
  BiasActRange<float, Vec8>(p, x, b, y, begin, end, stream);
}
TF_DISTILL_AVX2 void BiasActGradRangeAvx2(const FusedBiasActParams& p, const float* dy, const float* y, float* dx,
                                          int64_t begin, int64_t end) {
  BiasActGradRange<float>(p, dy, y, dx, begin, end);
}
TF_DISTILL_AVX2 void GradRowsSumAvx2(const FusedBiasActParams& p, const float* dy, const float* y, float* dx,
                                     float* sum, int64_t r0, int64_t r1) {
  GradRowsSum<float>(p, dy, y, dx, sum, r0, r1);
}
#undef TF_DISTILL_AVX2
#define DISPATCH(FN, T, ...)                                          \
  do {                                                                \
    if constexpr (std::is_same<T, float>::value) {                    \
      if (UseAvx2()) {                                                \
        FN##Avx2(__VA_ARGS__);                                        \
        break;                                                        \
      }                                                               \
    }                                                                 \
    FN<T>(__VA_ARGS__);                                               \
  } while (false)
#else
#define DISPATCH(FN, T, ...) FN<T>(__VA_ARGS__)
#endif

// Shards of at least 16k elements (cache-friendly, amortise the scheduling).
template <typename F>
void ParallelElementwise(const CpuRunner& runner, int64_t size, int bytes_loaded, int bytes_stored, F f) {
  runner.ParallelFor(size, CpuCost{static_cast<double>(bytes_loaded), static_cast<double>(bytes_stored), 4}, 16384,
                     [&f](int64_t begin, int64_t end) { f(begin, end); });
}

template <typename T>
void ForwardCpu(const CpuRunner& runner, const FusedBiasActParams& p, const T* x, const T* b, T* y) {
  // Not in place and larger than the cache: non-temporal stores, when every span of a shard
  // (shards start at multiples of 16384) is whole vectors of up to 16 floats on a 64-byte
  // aligned y.
  const bool stream = std::is_same<T, float>::value && x != y &&
                      p.size * static_cast<int64_t>(sizeof(T)) > kStreamOutputBytes &&
                      (p.has_bias ? p.channels : p.size) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 64 == 0;
  ParallelElementwise(runner, p.size, 2 * sizeof(T), sizeof(T), [&](int64_t begin, int64_t end) {
    DISPATCH(BiasActRange, T, p, x, b, y, begin, end, stream);
  });
}

template <typename T>
void GradCpu(const CpuRunner& runner, const FusedBiasActParams& p, const T* dy, const T* y, T* dx, T* db) {
  if (!p.has_bias) {
    ParallelElementwise(runner, p.size, 2 * sizeof(T), sizeof(T),
                        [&](int64_t begin, int64_t end) {
                          DISPATCH(BiasActGradRange, T, p, dy, y, dx, begin, end);
                        });
    return;
  }
  // dx and db in one pass: the rows are split into a fixed number of blocks, each summing
  // its rows into its own slice of `partial`; the slices are added up at the end.
  const int64_t channels = p.channels, rows = p.size / channels;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(rows, 4 * runner.NumThreads()));
  std::vector<float> partial(static_cast<size_t>(blocks * channels), 0.0f);
  const double block_elems = static_cast<double>(rows) / blocks * channels;
  const CpuCost cost{block_elems * 2 * sizeof(T), block_elems * sizeof(T), block_elems * 4};
  runner.ParallelFor(blocks, cost, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      DISPATCH(GradRowsSum, T, p, dy, y, dx, partial.data() + blk * channels, blk * rows / blocks,
               (blk + 1) * rows / blocks);
    }
  });
  for (int64_t c = 0; c < channels; ++c) {
    float total = 0.0f;
    for (int64_t blk = 0; blk < blocks; ++blk) total += partial[blk * channels + c];
    db[c] = static_cast<T>(total);
  }
}

}  // namespace

void FusedBiasActCpu(const CpuRunner& runner, const FusedBiasActParams& p, const float* x, const float* b, float* y) {
  ForwardCpu(runner, p, x, b, y);
}
void FusedBiasActCpu(const CpuRunner& runner, const FusedBiasActParams& p, const Half* x, const Half* b, Half* y) {
  ForwardCpu(runner, p, x, b, y);
}
void FusedBiasActGradCpu(const CpuRunner& runner, const FusedBiasActParams& p, const float* dy, const float* y,
                         float* dx, float* db) {
  GradCpu(runner, p, dy, y, dx, db);
}
void FusedBiasActGradCpu(const CpuRunner& runner, const FusedBiasActParams& p, const Half* dy, const Half* y,
                         Half* dx, Half* db) {
  GradCpu(runner, p, dy, y, dx, db);
}

#undef DISPATCH
#undef TF_DISTILL_INLINE

}  // namespace tf_distill
