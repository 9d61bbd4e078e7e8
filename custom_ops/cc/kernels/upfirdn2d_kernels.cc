// The CPU kernel of upfirdn2d (upfirdn2d.h): vectorized (cpu_isa.h), multithreaded through a
// CpuRunner, no TensorFlow header. The CUDA kernel is in upfirdn2d_kernels.cu.
#include "custom_ops/cc/kernels/upfirdn2d.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "custom_ops/cc/kernels/cpu_isa.h"

namespace tf_distill {

namespace {

struct SeparableKernel {  // k = ky kx^T (see FactorSeparable)
  std::vector<float> ky, kx;
};

template <typename T>
struct CpuArgs {
  const UpFirDn2dParams* p;
  const T* x;
  T* y;
  const float* k;              // kernel in float, row-major [kh, kw] (the 2-D path)
  const SeparableKernel* sep;  // its factors (the separable path), or nullptr
  const AxisTaps* ty;
  const AxisTaps* tx;
  bool stream_output;  // separable path: output too large to stay in cache, non-temporal stores where aligned
  // Separable path with up = 1, down 1 or 2 and a 4x4 kernel (the StyleGAN blur and 2x downsample):
  // every output takes the sliding-window pass, the input read as zero outside the image.
  bool slide = false;
  bool slide_symmetric = false;     // ky and kx mirror-symmetric (every StyleGAN resampling kernel)
  const float* zero_row = nullptr;  // in_w * c zeros: the rows above and below the input, if any are read
};


template <typename V>
__attribute__((always_inline)) inline void AddScaled(V* acc, float w, const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  *acc += w * v;
}

// One output pixel, channels [c0, c0 + NV * lanes): accumulate every tap (float only).
template <typename V, int NV>
__attribute__((always_inline)) inline void PixelBlockVec(const CpuArgs<float>& a, const float* x_n, int rb, int re,
                                                         int qb, int qe, int64_t row_stride, int c0, float* out) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  const int kw = a.p->kw, c = a.p->c;
  V acc[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) acc[v] = V{};
  for (int r = rb; r < re; ++r) {
    const float* xrow = x_n + a.ty->in[r] * row_stride + c0;
    const float* krow = a.k + a.ty->k[r] * kw;
    for (int q = qb; q < qe; ++q) {
      const float w = krow[a.tx->k[q]];
      const float* xp = xrow + static_cast<int64_t>(a.tx->in[q]) * c;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) AddScaled<V>(&acc[v], w, xp + v * kLanes);
    }
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) std::memcpy(out + v * kLanes, &acc[v], sizeof(V));
}

// One output pixel, `cnt` channels from c0, any element type (accumulation in float).
template <typename T>
__attribute__((always_inline)) inline void PixelBlockScalar(const CpuArgs<T>& a, const T* x_n, int rb, int re,
                                                            int qb, int qe, int64_t row_stride, int c0, int cnt,
                                                            T* out) {
  constexpr int kMax = 32;
  const int kw = a.p->kw, c = a.p->c;
  for (int s0 = 0; s0 < cnt; s0 += kMax) {
    const int len = std::min(kMax, cnt - s0);
    float acc[kMax] = {};
    for (int r = rb; r < re; ++r) {
      const T* xrow = x_n + a.ty->in[r] * row_stride + c0 + s0;
      const float* krow = a.k + a.ty->k[r] * kw;
      for (int q = qb; q < qe; ++q) {
        const float w = krow[a.tx->k[q]];
        const T* xp = xrow + static_cast<int64_t>(a.tx->in[q]) * c;
        for (int j = 0; j < len; ++j) acc[j] += w * static_cast<float>(xp[j]);
      }
    }
    for (int j = 0; j < len; ++j) out[s0 + j] = static_cast<T>(acc[j]);
  }
}

// Output rows [begin, end) of the flattened (n, out_y) range. For float, channel blocks of
// NV vectors V; the remaining channels (and every other type) take the scalar path.
template <typename T, typename V, int NV>
__attribute__((always_inline)) inline void UpFirDnRows(const CpuArgs<T>& a, int64_t begin, int64_t end) {
  const UpFirDn2dParams& p = *a.p;
  constexpr int kBlock = NV * static_cast<int>(sizeof(V) / sizeof(float));
  const int full = std::is_same<T, float>::value ? p.c / kBlock * kBlock : 0;
  const int64_t row_stride = static_cast<int64_t>(p.in_w) * p.c;
  for (int64_t row = begin; row < end; ++row) {
    const int n = static_cast<int>(row / p.out_h);
    const int oy = static_cast<int>(row % p.out_h);
    const int rb = a.ty->begin[oy], re = a.ty->begin[oy + 1];
    const T* x_n = a.x + static_cast<int64_t>(n) * p.in_h * row_stride;
    T* y_row = a.y + row * p.out_w * p.c;
    for (int ox = 0; ox < p.out_w; ++ox) {
      const int qb = a.tx->begin[ox], qe = a.tx->begin[ox + 1];
      T* out = y_row + static_cast<int64_t>(ox) * p.c;
      if constexpr (std::is_same<T, float>::value) {
        for (int c0 = 0; c0 < full; c0 += kBlock) {
          PixelBlockVec<V, NV>(a, x_n, rb, re, qb, qe, row_stride, c0, out + c0);
        }
      }
      if (full < p.c) PixelBlockScalar<T>(a, x_n, rb, re, qb, qe, row_stride, full, p.c - full, out + full);
    }
  }
}

// The float loops compiled for AVX2 + FMA (8 accumulators of 8 lanes = 64 channels per
// block), picked at run time (cpu_isa.h) so the library still runs on CPUs without AVX2.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void UpFirDnRowsAvx2(const CpuArgs<float>& a, int64_t begin, int64_t end) {
  UpFirDnRows<float, Vec8, 8>(a, begin, end);
}
#endif

template <typename T>
void UpFirDnRowsDispatch(const CpuArgs<T>& a, int64_t begin, int64_t end) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same<T, float>::value) {
    if (UseAvx2()) {
      UpFirDnRowsAvx2(a, begin, end);
      return;
    }
  }
#endif
  UpFirDnRows<T, Vec4, 8>(a, begin, end);  // SSE: 8 accumulators of 4 lanes = 32 channels
}

// Separable kernels (rank 1, k = ky kx^T, as every StyleGAN resampling kernel is) are applied
// in two passes per output row: the taps of ky sum the needed input rows into a float row
// buffer, then the taps of kx filter that buffer along x. That is kh + kw multiply-adds per
// output value instead of kh * kw (8 instead of 16 for the 4x4 blur).
//
// ky, kx when k (row-major [kh, kw], float) is an outer product up to float rounding
// (relative 1e-6 of the largest tap); false otherwise (then the 2-D path runs).
bool FactorSeparable(const std::vector<float>& k, int kh, int kw, SeparableKernel* s) {
  int i0 = 0, j0 = 0;
  float peak = 0.0f;
  for (int i = 0; i < kh; ++i) {
    for (int j = 0; j < kw; ++j) {
      if (std::abs(k[i * kw + j]) > peak) peak = std::abs(k[i * kw + j]), i0 = i, j0 = j;
    }
  }
  if (!(peak > 0.0f) || !std::isfinite(peak)) return false;
  s->ky.resize(kh);
  s->kx.resize(kw);
  for (int i = 0; i < kh; ++i) s->ky[i] = k[i * kw + j0];
  for (int j = 0; j < kw; ++j) s->kx[j] = k[i0 * kw + j] / k[i0 * kw + j0];
  for (int i = 0; i < kh; ++i) {
    for (int j = 0; j < kw; ++j) {
      if (std::abs(s->ky[i] * s->kx[j] - k[i * kw + j]) > 1e-6f * peak) return false;
    }
  }
  return true;
}



// Vertical pass over `len` values: t = sum over the row taps [rb, re) of ky * input row, where
// `x_at` is the input at the tile's first column. Up to four taps per sweep, so t is written
// once per four taps.
template <typename T>
__attribute__((always_inline)) inline void VerticalTaps(const CpuArgs<T>& a, const T* x_at, int64_t row_len,
                                                        int rb, int re, int64_t len, float* __restrict__ t) {
  const auto row_ptr = [&](int tap) { return x_at + a.ty->in[tap] * row_len; };
  const auto row_w = [&](int tap) { return a.sep->ky[a.ty->k[tap]]; };
  int r = rb;
  if (re - rb >= 4) {
    const T *__restrict__ s0 = row_ptr(r), *__restrict__ s1 = row_ptr(r + 1), *__restrict__ s2 = row_ptr(r + 2),
                        *__restrict__ s3 = row_ptr(r + 3);
    const float w0 = row_w(r), w1 = row_w(r + 1), w2 = row_w(r + 2), w3 = row_w(r + 3);
    for (int64_t j = 0; j < len; ++j) {
      t[j] = w0 * static_cast<float>(s0[j]) + w1 * static_cast<float>(s1[j]) + w2 * static_cast<float>(s2[j]) +
             w3 * static_cast<float>(s3[j]);
    }
    r += 4;
  } else if (re - rb >= 2) {
    const T *__restrict__ s0 = row_ptr(r), *__restrict__ s1 = row_ptr(r + 1);
    const float w0 = row_w(r), w1 = row_w(r + 1);
    for (int64_t j = 0; j < len; ++j) t[j] = w0 * static_cast<float>(s0[j]) + w1 * static_cast<float>(s1[j]);
    r += 2;
  } else if (re - rb == 1) {
    const T* __restrict__ s0 = row_ptr(r);
    const float w0 = row_w(r);
    for (int64_t j = 0; j < len; ++j) t[j] = w0 * static_cast<float>(s0[j]);
    r += 1;
  } else {
    std::fill(t, t + len, 0.0f);  // no input row under the kernel (padding)
  }
  for (; r < re; ++r) {
    const T* __restrict__ s0 = row_ptr(r);
    const float w0 = row_w(r);
    for (int64_t j = 0; j < len; ++j) t[j] += w0 * static_cast<float>(s0[j]);
  }
}

// Horizontal pass for one output pixel, channels [c0, c0 + NV * lanes) of the filtered strip
// `tmp` (which starts at input column col0): taps [qb, qe) of kx, accumulated in registers.
template <typename V, int NV, typename T>
__attribute__((always_inline)) inline void HorizontalTaps(const CpuArgs<T>& a, const float* tmp, int col0, int qb,
                                                          int qe, int c0, bool stream, T* out) {
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float));
  const int c = a.p->c;
  V acc[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) acc[v] = V{};
  for (int q = qb; q < qe; ++q) {
    const float w = a.sep->kx[a.tx->k[q]];
    const float* src = tmp + static_cast<int64_t>(a.tx->in[q] - col0) * c + c0;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) AddScaled<V>(&acc[v], w, src + v * kLanes);
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    float* dst = reinterpret_cast<float*>(out) + c0 + v * kLanes;
    if (stream) {
      StreamStore(dst, acc[v]);
    } else {
      std::memcpy(dst, &acc[v], sizeof(V));
    }
  }
}

// The hot loops' lambdas are inlined into their callers, which carry the AVX2 / AVX-512 target.
#define TF_DISTILL_ALWAYS_INLINE __attribute__((always_inline))

// Read-prefetches the cache lines of [p, p + bytes) into L2.
__attribute__((always_inline)) inline void PrefetchToL2(const void* p, int64_t bytes) {
  const char* at = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(at + o, 0, 2);
}

// Output columns [ox_begin, ox_end) of one output row (y_row), in tiles of `tile` output columns
// so the vertically filtered strip `tmp` (at most in_w * c floats) stays in L1 for the
// horizontal pass, while the few input rows under the kernel stay in L2 for the next row.
template <typename T, typename V, int NV>
__attribute__((always_inline)) inline void TwoPassColumns(const CpuArgs<T>& a, const T* x_n, int rb, int re,
                                                          T* y_row, int ox_begin, int ox_end, int tile,
                                                          const T* next_y_row, bool stream, float* __restrict__ tmp) {
  const UpFirDn2dParams& p = *a.p;
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float));
  constexpr int kBlock = NV * kLanes;
  const int c = p.c;
  const int full = std::is_same<T, float>::value ? c / kBlock * kBlock : 0;       // NV-vector blocks
  const int full_vec = std::is_same<T, float>::value ? c / kLanes * kLanes : 0;  // then single vectors
  const int64_t row_len = static_cast<int64_t>(p.in_w) * c;
  for (int ox0 = ox_begin; ox0 < ox_end; ox0 += tile) {
    const int ox1 = std::min(ox_end, ox0 + tile);
    const int qb0 = a.tx->begin[ox0], qe1 = a.tx->begin[ox1];
    // Input columns under the tile's taps: taps are sorted by input column within a pixel
    // and pixels by their first column, so the first and last entries bound them.
    const int col0 = qb0 < qe1 ? a.tx->in[qb0] : 0;
    const int cols = qb0 < qe1 ? a.tx->in[qe1 - 1] - col0 + 1 : 0;
    const T* x_at = x_n + static_cast<int64_t>(col0) * c;
    if (rb < re && a.ty->in[re - 1] + 1 < p.in_h) {
      // The next output row needs the input row after the last one read here: ask for its
      // strip now (into L2), so the vertical pass of the next row does not wait on memory.
      PrefetchToL2(x_at + (a.ty->in[re - 1] + 1) * row_len, static_cast<int64_t>(cols) * c * sizeof(T));
    }
    if (next_y_row != nullptr) {  // and the lines the next row's tile will store to (see SeparableRows)
      PrefetchToL2(next_y_row + static_cast<int64_t>(ox0) * c, static_cast<int64_t>(ox1 - ox0) * c * sizeof(T));
    }
    VerticalTaps<T>(a, x_at, row_len, rb, re, static_cast<int64_t>(cols) * c, tmp);
    // Horizontal pass over tmp, channel blocks in vector registers.
    for (int ox = ox0; ox < ox1; ++ox) {
      const int qb = a.tx->begin[ox], qe = a.tx->begin[ox + 1];
      T* out = y_row + static_cast<int64_t>(ox) * c;
      for (int c0 = 0; c0 < full; c0 += kBlock) HorizontalTaps<V, NV>(a, tmp, col0, qb, qe, c0, stream, out);
      for (int c0 = full; c0 < full_vec; c0 += kLanes) HorizontalTaps<V, 1>(a, tmp, col0, qb, qe, c0, stream, out);
      constexpr int kTail = 32;  // remaining channels (and other types): float accumulators on the stack
      for (int s0 = full_vec; s0 < c; s0 += kTail) {
        const int len = std::min(kTail, c - s0);
        float acc[kTail] = {};
        for (int q = qb; q < qe; ++q) {
          const float w = a.sep->kx[a.tx->k[q]];
          const float* src = tmp + static_cast<int64_t>(a.tx->in[q] - col0) * c + s0;
          for (int j = 0; j < len; ++j) acc[j] += w * src[j];
        }
        for (int j = 0; j < len; ++j) out[s0 + j] = static_cast<T>(acc[j]);
      }
    }
  }
}

// The sliding-window pass for 4x4 separable kernels without upsampling (the StyleGAN blur and
// 2x downsample), on R consecutive output rows of one image at once: output row j's four row taps
// read rows[j * DOWN + t] (consecutive input rows, or a.zero_row where the kernel hangs over the
// top or bottom edge) with weights wy, so each of the 4 + (R - 1) * DOWN input rows is loaded once
// per column for all R output rows. For each block of NB vectors of channels it walks along the
// rows keeping the last 4 - DOWN vertical sums of every output row in registers, so each output
// vector costs DOWN new vertical sums plus 4 horizontal multiply-adds, and neither the strip
// buffer nor the tap tables are touched. Columns outside the input count as zeros (bounds checks
// only near the edges). float only, c a multiple of the vector width.
template <typename V, int NB, int DOWN, int R, bool kSymmetric>
__attribute__((always_inline)) inline void SlidingColumns(const CpuArgs<float>& a, const float* const* rows,
                                                          const float* const* next_rows, const float* wy,
                                                          float* const* y_rows, const float* const* next_y_rows,
                                                          bool stream) {
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float));
  constexpr int kTaps = 4, kKeep = kTaps - DOWN;
  constexpr int kRowsIn = kTaps + (R - 1) * DOWN;  // input rows under the R output rows
  const int c = a.p->c, in_w = a.p->in_w, count = a.p->out_w;
  const int col_first = -a.p->pad_x0;  // input column of the first output's first tap
  // Tap t of output i reads column col_first + i * DOWN + t with weight kx[3 - t] (the flipped kernel).
  const float wx[kTaps] = {a.sep->kx[3], a.sep->kx[2], a.sep->kx[1], a.sep->kx[0]};
  const int prefetch_cols = std::min(8, in_w - 1);  // how far ahead the next rows are fetched
  // Outputs [i_in0, i_in1) add only columns inside the input: no bounds checks there.
  const int i_in0 = std::min(count, static_cast<int>(std::max<int64_t>(0, -FloorDiv(col_first + kKeep, DOWN))));
  const int i_in1 = std::max(i_in0, std::min(count, static_cast<int>(FloorDiv(in_w - kTaps - col_first, DOWN) + 1)));
  const auto block = [&](int c0, auto nb_const) TF_DISTILL_ALWAYS_INLINE {  // channels [c0, c0 + kNb * lanes)
    constexpr int kNb = decltype(nb_const)::value;
    V win[R][kTaps][kNb];  // win[j][t]: output row j's vertical sum at the output's tap t
    const auto vertical = [&](int col, int t) TF_DISTILL_ALWAYS_INLINE {
      const int64_t o = static_cast<int64_t>(col) * c + c0;
#pragma GCC unroll 8
      for (int v = 0; v < kNb; ++v) {
        V r[kRowsIn];
#pragma GCC unroll 8
        for (int s = 0; s < kRowsIn; ++s) std::memcpy(&r[s], rows[s] + o + v * kLanes, sizeof(V));
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
          const V* q = r + j * DOWN;
          if constexpr (kSymmetric) {  // wy[0] == wy[3], wy[1] == wy[2]: half the multiplies
            win[j][t][v] = wy[0] * (q[0] + q[3]) + wy[1] * (q[1] + q[2]);
          } else {
            win[j][t][v] = (wy[0] * q[0] + wy[1] * q[1]) + (wy[2] * q[2] + wy[3] * q[3]);
          }
        }
      }
    };
    const auto vertical_or_zero = [&](int col, int t) TF_DISTILL_ALWAYS_INLINE {
      if (col >= 0 && col < in_w) {
        vertical(col, t);
      } else {
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
#pragma GCC unroll 8
          for (int v = 0; v < kNb; ++v) win[j][t][v] = V{};
        }
      }
    };
#pragma GCC unroll 4
    for (int t = 0; t < kKeep; ++t) vertical_or_zero(col_first + t, t);
    // Output i; `checked`: some of the columns it adds may lie outside the input.
    const auto step = [&](int i, auto checked) TF_DISTILL_ALWAYS_INLINE {
      const int col = col_first + i * DOWN;
      // The R * DOWN input rows the next group of output rows adds (null outside the input), a few
      // columns ahead: DOWN columns per output, so every column is fetched.
      const int ahead = std::max(0, std::min(col + kTaps + prefetch_cols, in_w - 1));
#pragma GCC unroll 4
      for (int r = 0; r < R * DOWN; ++r) {
        if (next_rows[r] == nullptr) continue;
#pragma GCC unroll 2
        for (int dc = 0; dc < DOWN; ++dc) {
          const float* at = next_rows[r] + static_cast<int64_t>(std::min(ahead + dc, in_w - 1)) * c + c0;
#pragma GCC unroll 8
          for (int v = 0; v < kNb; ++v) __builtin_prefetch(at + v * kLanes, 0, 2);
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) {  // the lines the next group of rows will store to, into L2
        if (next_y_rows[j] == nullptr) continue;
#pragma GCC unroll 8
        for (int v = 0; v < kNb; ++v) __builtin_prefetch(next_y_rows[j] + static_cast<int64_t>(i) * c + c0 + v * kLanes, 0, 2);
      }
#pragma GCC unroll 4
      for (int t = kKeep; t < kTaps; ++t) {
        if constexpr (decltype(checked)::value) {
          vertical_or_zero(col + t, t);
        } else {
          vertical(col + t, t);
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) {
        float* out = y_rows[j] + static_cast<int64_t>(i) * c + c0;
        const auto& w = win[j];
#pragma GCC unroll 8
        for (int v = 0; v < kNb; ++v) {
          const V o = kSymmetric ? wx[0] * (w[0][v] + w[3][v]) + wx[1] * (w[1][v] + w[2][v])
                                 : (wx[0] * w[0][v] + wx[1] * w[1][v]) + (wx[2] * w[2][v] + wx[3] * w[3][v]);
          if (stream) {
            StreamStore(out + v * kLanes, o);
          } else {
            std::memcpy(out + v * kLanes, &o, sizeof(V));
          }
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) {
#pragma GCC unroll 4
        for (int t = 0; t < kKeep; ++t) {
#pragma GCC unroll 8
          for (int v = 0; v < kNb; ++v) win[j][t][v] = win[j][t + DOWN][v];
        }
      }
    };
    for (int i = 0; i < i_in0; ++i) step(i, std::true_type());
    for (int i = i_in0; i < i_in1; ++i) step(i, std::false_type());
    for (int i = i_in1; i < count; ++i) step(i, std::true_type());
  };
  int c0 = 0;
  for (; c0 + NB * kLanes <= c; c0 += NB * kLanes) block(c0, std::integral_constant<int, NB>());
  if constexpr (NB > 2) {
    for (; c0 + 2 * kLanes <= c; c0 += 2 * kLanes) block(c0, std::integral_constant<int, 2>());
  }
  for (; c0 < c; c0 += kLanes) block(c0, std::integral_constant<int, 1>());  // the last few vectors
}

// Output rows [begin, end) of the flattened (n, out_y) range.
template <typename T, typename V, int NV>
__attribute__((always_inline)) inline void SeparableRows(const CpuArgs<T>& a, int64_t begin, int64_t end,
                                                         int tile, float* __restrict__ tmp) {
  const UpFirDn2dParams& p = *a.p;
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float));
  // Vectors per sliding block. The blur: 2 measured fastest with AVX-512 (64 px, one thread, medians
  // of 8 interleaved runs: 0.35 ns/output vs 0.52 with 4 vectors and 0.39 with 8; 128/256 px, two
  // threads: 8 no faster, 4 slower). The 2x downsample reads two new input columns per output, and
  // walking them a whole 512-byte pixel at a time is faster despite the register pressure: 8
  // vectors, 128 px, 128 channels, two threads: 1.19 vs 1.50 ms with AVX-512, 1.63 vs 2.09 ms with
  // AVX2 (4 vectors: 1.23 / 1.71 ms); 256 px: 5.4 vs 6.4 ms.
  constexpr int kSlideBlock = 2;
  constexpr int kSlideBlockDown2 = 8;
  const int c = p.c;
  const int64_t row_len = static_cast<int64_t>(p.in_w) * c;
  // Outputs larger than the last-level cache are written with non-temporal stores: they would
  // be evicted before anyone reads them, and streaming skips the read-for-ownership traffic.
  const bool stream = std::is_same<T, float>::value && a.stream_output && c % kLanes == 0 &&
                      reinterpret_cast<uintptr_t>(a.y) % sizeof(V) == 0;
  const bool slide = std::is_same<T, float>::value && a.slide && c % kLanes == 0;
  for (int64_t row = begin; row < end; ++row) {
    const int n = static_cast<int>(row / p.out_h);
    const int oy = static_cast<int>(row % p.out_h);
    const int rb = a.ty->begin[oy], re = a.ty->begin[oy + 1];
    const T* x_n = a.x + static_cast<int64_t>(n) * p.in_h * row_len;
    T* y_row = a.y + row * p.out_w * c;
    // Fetching the next output row's lines a row ahead hides the read-for-ownership of the stores
    // (64 px blur, 2 threads: 15-25% faster, warm or cold caches). A read prefetch into L2:
    // prefetchw and prefetcht0 measured no faster than none. Not when streaming.
    const T* next_y_row = !stream && row + 1 < end ? y_row + static_cast<int64_t>(p.out_w) * c : nullptr;
    if constexpr (std::is_same<T, float>::value) {
      if (slide) {
        // With AVX-512 the blur takes two output rows at a time: five input rows loaded per column
        // instead of eight (two threads, interleaved with the one-row pass: 128 px 2.4-2.7 vs
        // 3.0-3.4 ms, 256 px 10.1-10.7 vs 12.5-13.2 ms, 64 px within the noise; three rows no
        // better, four slower). Not with AVX2 (16 registers: 5-10% slower), nor for the
        // downsample, whose eight-vector blocks fill the registers.
        constexpr bool kPairRows = sizeof(V) == sizeof(Vec16);
        const int group = kPairRows && p.down == 1 && row + 1 < end && oy + 1 < p.out_h ? 2 : 1;
        // Row tap t of output row j reads input row iy0 + j * down + t with weight ky[3 - t].
        const int iy0 = oy * p.down - p.pad_y0;
        const float* rows[5];
        for (int s = 0; s < 4 + (group - 1) * p.down; ++s) {
          const int iy = iy0 + s;
          rows[s] = iy >= 0 && iy < p.in_h ? x_n + static_cast<int64_t>(iy) * row_len : a.zero_row;
        }
        const float wy[4] = {a.sep->ky[3], a.sep->ky[2], a.sep->ky[1], a.sep->ky[0]};
        const float* next_rows[2];  // the input rows the next group of output rows adds
        for (int r = 0; r < 2; ++r) {
          const int iy = iy0 + 4 + (group - 1) * p.down + r;
          next_rows[r] = r < group * p.down && iy >= 0 && iy < p.in_h ? x_n + static_cast<int64_t>(iy) * row_len
                                                                       : nullptr;
        }
        float* y_rows[2] = {y_row, group == 2 ? y_row + static_cast<int64_t>(p.out_w) * c : nullptr};
        const float* next_y_rows[2];  // what the next group will store to (see next_y_row)
        for (int j = 0; j < 2; ++j) {
          next_y_rows[j] = !stream && j < group && row + group + j < end
                               ? y_row + static_cast<int64_t>(group + j) * p.out_w * c : nullptr;
        }
        // Symmetric taps add the mirrored inputs first (wy is ky reversed).
        if (group == 2) {
          if constexpr (kPairRows) {
            if (a.slide_symmetric) {
              SlidingColumns<V, kSlideBlock, 1, 2, true>(a, rows, next_rows, wy, y_rows, next_y_rows, stream);
            } else {
              SlidingColumns<V, kSlideBlock, 1, 2, false>(a, rows, next_rows, wy, y_rows, next_y_rows, stream);
            }
          }
        } else if (p.down == 1) {
          if (a.slide_symmetric) {
            SlidingColumns<V, kSlideBlock, 1, 1, true>(a, rows, next_rows, wy, y_rows, next_y_rows, stream);
          } else {
            SlidingColumns<V, kSlideBlock, 1, 1, false>(a, rows, next_rows, wy, y_rows, next_y_rows, stream);
          }
        } else if (a.slide_symmetric) {
          SlidingColumns<V, kSlideBlockDown2, 2, 1, true>(a, rows, next_rows, wy, y_rows, next_y_rows, stream);
        } else {
          SlidingColumns<V, kSlideBlockDown2, 2, 1, false>(a, rows, next_rows, wy, y_rows, next_y_rows, stream);
        }
        row += group - 1;
        continue;
      }
    }
    TwoPassColumns<T, V, NV>(a, x_n, rb, re, y_row, 0, p.out_w, tile, next_y_row, stream, tmp);
  }
  if (stream) __builtin_ia32_sfence();  // streamed stores are visible before the op completes
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void SeparableRowsAvx2(const CpuArgs<float>& a, int64_t begin, int64_t end,
                                                           int tile, float* tmp) {
  SeparableRows<float, Vec8, 8>(a, begin, end, tile, tmp);
}
// AVX-512: 128 channels per block in 8 zmm accumulators, and the vertical pass in zmm too.
__attribute__((target("avx512f,fma,prefer-vector-width=512"))) void SeparableRowsAvx512(
    const CpuArgs<float>& a, int64_t begin, int64_t end, int tile, float* tmp) {
  SeparableRows<float, Vec16, 8>(a, begin, end, tile, tmp);
}
#endif

template <typename T>
void SeparableRowsDispatch(const CpuArgs<T>& a, int64_t begin, int64_t end, int tile, float* tmp) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same<T, float>::value) {
    // Channels that fill whole 16-lane vectors take AVX-512. Others that fill 8-lane ones (the pruned
    // student's 40 at 256 px) take AVX2: with AVX-512 their last 8 channels would miss the sliding
    // pass and fall to the scalar tail.
    if (UseAvx512() && (a.p->c % 16 == 0 || a.p->c % 8 != 0)) {
      SeparableRowsAvx512(a, begin, end, tile, tmp);
      return;
    }
    if (UseAvx2()) {
      SeparableRowsAvx2(a, begin, end, tile, tmp);
      return;
    }
  }
#endif
  SeparableRows<T, Vec4, 8>(a, begin, end, tile, tmp);
}

// Output rows per call of `rows` before the epilogue runs on them: they are still in L2 (a 256 px row
// of 40 channels is 40 KiB).
constexpr int64_t kEpilogueRows = 4;

// rows(begin, end) over [begin, end) in chunks, each followed by the epilogue when the params have one
// (float only).
template <typename T, typename Fn>
void RowsWithEpilogue(const UpFirDn2dParams& p, T* y, int64_t begin, int64_t end, const Fn& rows) {
  if constexpr (std::is_same<T, float>::value) {
    if (p.epilogue.Active()) {
      for (int64_t r = begin; r < end; r += kEpilogueRows) {
        const int64_t r_end = std::min(end, r + kEpilogueRows);
        rows(r, r_end);
        EpilogueRows(p.epilogue, p.out_h, p.out_w, p.c, y, y, r, r_end);
      }
      return;
    }
  }
  rows(begin, end);
}

template <typename T>
void UpFirDn2dCpuImpl(const CpuRunner& runner, const UpFirDn2dParams& p, const T* x, const T* k, T* y) {
  const AxisTaps ty = MakeAxisTaps(p.out_h, p.in_h, p.kh, p.up, p.down, p.pad_y0);
  const AxisTaps tx = MakeAxisTaps(p.out_w, p.in_w, p.kw, p.up, p.down, p.pad_x0);
  std::vector<float> kf(static_cast<size_t>(p.kh) * p.kw);
  for (size_t i = 0; i < kf.size(); ++i) kf[i] = static_cast<float>(k[i]);
  const int64_t rows = static_cast<int64_t>(p.n) * p.out_h;
  const double per_row = static_cast<double>(p.out_w) * p.c;
  SeparableKernel sk;
  if (FactorSeparable(kf, p.kh, p.kw, &sk)) {
    // Not streamed when the epilogue reads the rows back.
    CpuArgs<T> args{&p, x, y, kf.data(), &sk, &ty, &tx,
                    !p.epilogue.Active() && rows * p.out_w * p.c * int64_t{sizeof(T)} > kStreamOutputBytes};
    args.slide = p.up == 1 && (p.down == 1 || p.down == 2) && p.kh == 4 && p.kw == 4;
    std::vector<float> zero_row;
    if (args.slide && (p.pad_y0 > 0 || (p.out_h - 1) * p.down - p.pad_y0 + 3 >= p.in_h)) {
      zero_row.assign(static_cast<size_t>(p.in_w) * p.c, 0.0f);
      args.zero_row = zero_row.data();
    }
    args.slide_symmetric = sk.ky.size() == 4 && sk.kx.size() == 4 && sk.ky[0] == sk.ky[3] &&
                           sk.ky[1] == sk.ky[2] && sk.kx[0] == sk.kx[3] && sk.kx[1] == sk.kx[2];
    // Multiply-adds per output row: the row taps over the input width plus the column taps.
    const double row_taps = static_cast<double>(ty.in.size()) / p.out_h;
    const double col_taps = static_cast<double>(tx.in.size()) / p.out_w;
    const double work = row_taps * p.in_w * p.c + col_taps * per_row;
    const CpuCost cost{row_taps * p.in_w * p.c * sizeof(T), per_row * sizeof(T), work};
    // Output columns per tile: about 16 KiB of filtered input strip (4096 floats).
    const int tile = std::max(1, std::min(p.out_w, 4096 / p.c * p.up / p.down));
    runner.ParallelFor(rows, cost, 1, [&args, &p, tile, y](int64_t begin, int64_t end) {
      // Place the strip 2 KiB away from the input modulo 4 KiB: input rows are often a
      // multiple of 4 KiB apart, and a strip aliasing them (4K aliasing) stalls its stores.
      // Left uninitialised: the vertical pass writes every value the horizontal pass reads.
      const std::unique_ptr<float[]> buffer(new float[static_cast<size_t>(p.in_w) * p.c + 1024]);
      const uintptr_t gap = (reinterpret_cast<uintptr_t>(args.x) + 2048 - reinterpret_cast<uintptr_t>(buffer.get())) % 4096;
      float* strip = buffer.get() + gap / sizeof(float);
      RowsWithEpilogue(p, y, begin, end, [&](int64_t b, int64_t e) { SeparableRowsDispatch<T>(args, b, e, tile, strip); });
    });
    return;
  }
  const CpuArgs<T> args{&p, x, y, kf.data(), nullptr, &ty, &tx, false};
  // Average taps per output pixel, for the cost model that sizes the shards.
  const double taps = static_cast<double>(ty.in.size()) / p.out_h * tx.in.size() / p.out_w;
  const CpuCost cost{per_row * taps * sizeof(T), per_row * sizeof(T), per_row * taps};
  runner.ParallelFor(rows, cost, 1, [&args, &p, y](int64_t begin, int64_t end) {
    RowsWithEpilogue(p, y, begin, end, [&](int64_t b, int64_t e) { UpFirDnRowsDispatch<T>(args, b, e); });
  });
}

}  // namespace

void UpFirDn2dCpu(const CpuRunner& runner, const UpFirDn2dParams& p, const float* x, const float* k, float* y) {
  UpFirDn2dCpuImpl(runner, p, x, k, y);
}

void UpFirDn2dCpu(const CpuRunner& runner, const UpFirDn2dParams& p, const Half* x, const Half* k, Half* y) {
  UpFirDn2dCpuImpl(runner, p, x, k, y);
}

}  // namespace tf_distill
