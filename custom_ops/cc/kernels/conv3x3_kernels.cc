// The CPU kernel of conv3x3 (conv3x3.h): direct convolution, register-blocked for AVX2 + FMA,
// multithreaded through a CpuRunner, no TensorFlow header.
//
// An output row is cut into runs of output columns that read the same taps (the borders read
// fewer), and a run into tiles of P pixels x NV vectors of 8 output channels whose sums stay
// in registers while the taps and input channels stream past: per input channel, NV weight
// vectors are loaded once and each of the P input values is broadcast once, for P * NV FMAs.
// The epilogue (bias, noise, leaky ReLU) is applied to the sums in registers before they are stored.
#include "custom_ops/cc/kernels/conv3x3.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "custom_ops/cc/kernels/cpu_isa.h"

namespace tf_distill {

namespace {

constexpr int kMaxTaps = 9;

// The taps of one output row: input rows and kernel rows.
int RowTaps(const Conv3x3Params& p, int oy, int* in_row, int* k_row) {
  int n = 0;
  for (int i = 0; i < 3; ++i) {
    int iy;
    if (p.transposed) {
      if (oy < i || (oy - i) % 2 != 0) continue;
      iy = (oy - i) / 2;
    } else {
      iy = oy + i - 1;
    }
    if (iy < 0 || iy >= p.in_h) continue;
    in_row[n] = iy;
    k_row[n] = i;
    ++n;
  }
  return n;
}

// Output columns come in phases (one for the stride-1 conv, two for the transposed one): in phase
// b, output column step * j + b reads input column j + ColumnOffset(kw) through kernel column kw.
struct ColumnPhase {
  int b, count, step;
  int kw[3], dx[3], taps;  // the kernel columns of this phase and their input offsets
};

std::vector<ColumnPhase> ColumnPhases(const Conv3x3Params& p) {
  std::vector<ColumnPhase> phases;
  if (!p.transposed) {
    phases.push_back({0, p.in_w, 1, {0, 1, 2}, {-1, 0, 1}, 3});
  } else {  // out = 2 * xi + kw: phase b takes the kw of its parity, xi = j - (kw - b) / 2
    phases.push_back({0, p.in_w + 1, 2, {0, 2, 0}, {0, -1, 0}, 2});
    phases.push_back({1, p.in_w, 2, {1, 0, 0}, {0, 0, 0}, 1});
  }
  return phases;
}

// Which of a phase's kernel columns read a real input column at j (bit t for tap t).
int ColumnMask(const ColumnPhase& ph, int in_w, int j) {
  int mask = 0;
  for (int t = 0; t < ph.taps; ++t) {
    const int xi = j + ph.dx[t];
    if (xi >= 0 && xi < in_w) mask |= 1 << t;
  }
  return mask;
}

// Everything one output row needs: the tap lists of each tile are built from these.
struct RowContext {
  const Conv3x3Params* p;
  const float* x_img;  // this sample's input
  const float* w;
  float* out_row;
  const float* packed;  // the AVX2 path's weights, chunk by chunk (PackWeights)
  const float* noise_row;  // this output row of the epilogue's noise, or nullptr
  int rows, in_row[3], k_row[3];
};

// Pointers for the taps of a tile starting at phase column j: (input pixel, weight tap, input
// channels to read). A tap's weights start at w + tap * c * ldw, ldw floats per input channel. Taps
// whose inputs and weights both continue the previous tap's (neighbouring columns of one kernel row)
// are merged into one longer run, so that a tile's inner loop runs fewer, longer passes.
int TileTaps(const RowContext& r, const ColumnPhase& ph, int mask, int j, const float* w, int64_t ldw,
             const float** xs, const float** ws, int* lens) {
  const Conv3x3Params& p = *r.p;
  int n = 0;
  for (int a = 0; a < r.rows; ++a) {
    for (int t = 0; t < ph.taps; ++t) {
      if (!(mask >> t & 1)) continue;
      const float* x = r.x_img + (static_cast<int64_t>(r.in_row[a]) * p.in_w + j + ph.dx[t]) * p.c;
      const float* wt = w + static_cast<int64_t>(r.k_row[a] * 3 + ph.kw[t]) * p.c * ldw;
      if (n > 0 && x == xs[n - 1] + lens[n - 1] && wt == ws[n - 1] + lens[n - 1] * ldw) {
        lens[n - 1] += p.c;
        continue;
      }
      xs[n] = x;
      ws[n] = wt;
      lens[n] = p.c;
      ++n;
    }
  }
  return n;
}

// Plain loops, any k: the kernel for CPUs without AVX2 and the oracle of nothing (the tests
// compare every path with TensorFlow's convs).
void RowScalar(const RowContext& r) {
  const Conv3x3Params& p = *r.p;
  const float* xs[kMaxTaps];
  const float* ws[kMaxTaps];
  int lens[kMaxTaps];
  for (const ColumnPhase& ph : ColumnPhases(p)) {
    for (int j = 0; j < ph.count; ++j) {
      const int n = TileTaps(r, ph, ColumnMask(ph, p.in_w, j), j, r.w, p.k, xs, ws, lens);
      float* out = r.out_row + static_cast<int64_t>(ph.step * j + ph.b) * p.k;
      for (int o = 0; o < p.k; ++o) out[o] = 0.0f;
      for (int t = 0; t < n; ++t) {
        for (int i = 0; i < lens[t]; ++i) {
          const float v = xs[t][i];
          const float* wr = ws[t] + static_cast<int64_t>(i) * p.k;
          for (int o = 0; o < p.k; ++o) out[o] += v * wr[o];
        }
      }
      for (int o = 0; o < p.k; ++o) out[o] = p.epilogue.Value(r.noise_row, ph.step * j + ph.b, o, out[o]);
    }
  }
}

// Output channels (k a multiple of 8) go in chunks of 3 vectors of 8 where possible, 2 or 1 at the end
// (5 = 3 + 2, 4 = 2 + 2): the vectors of the next chunk when `vecs` remain.
int ChunkVectors(int vecs) { return vecs == 1 ? 1 : (vecs == 2 || vecs == 4) ? 2 : 3; }

// The weights [3, 3, c, k] regrouped chunk by chunk, each chunk [3 * 3, c, 8 * nv] at 9 * c * oc0, so
// that a tile streams through contiguous weights (whole cache lines) instead of strided slices.
std::vector<float> PackWeights(const Conv3x3Params& p, const float* w) {
  std::vector<float> packed(static_cast<size_t>(9) * p.c * p.k);
  int oc0 = 0;
  for (int vecs = p.k / 8; vecs > 0;) {
    const int width = 8 * ChunkVectors(vecs);
    float* dst = packed.data() + static_cast<int64_t>(9) * p.c * oc0;
    for (int64_t row = 0; row < int64_t{9} * p.c; ++row, dst += width) {
      const float* src = w + row * p.k + oc0;
      for (int o = 0; o < width; ++o) dst[o] = src[o];
    }
    oc0 += width;
    vecs -= width / 8;
  }
  return packed;
}

#if defined(__x86_64__) && defined(__GNUC__)

// P output pixels x NV * 8 output channels. xs[t]: the tile's first input pixel for tap t (the
// others follow at stride c); ws[t]: that tap's weights at the tile's first output channel.
// The epilogue of a tile: bias at its first output channel, noise at its first pixel (nullptr: none).
struct TileEpilogue {
  const float* bias;
  const float* noise;
  int noise_step;
  float strength;
  bool lrelu;
  float alpha;
};

template <int NV, int P>
__attribute__((target("avx2,fma"))) void TileAvx2(const float* const* xs, const float* const* ws, const int* lens,
                                                  int taps, int64_t x_offset, int c, int ldw, float* out,
                                                  int64_t out_stride, const TileEpilogue& e) {
  __m256 acc[P * NV];
#pragma GCC unroll 32
  for (int i = 0; i < P * NV; ++i) acc[i] = _mm256_setzero_ps();
  for (int t = 0; t < taps; ++t) {
    const float* xp = xs[t] + x_offset;
    const float* wp = ws[t];
    for (int i = 0; i < lens[t]; ++i, wp += ldw) {
      __m256 wv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        wv[v] = _mm256_loadu_ps(wp + 8 * v);
        asm("" : "+x"(wv[v]));  // keep the weights in registers: GCC would otherwise reload them per FMA
      }
#pragma GCC unroll 16
      for (int q = 0; q < P; ++q) {
        const __m256 xv = _mm256_broadcast_ss(xp + q * c + i);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[q * NV + v] = _mm256_fmadd_ps(xv, wv[v], acc[q * NV + v]);
      }
    }
  }
  if (e.bias != nullptr) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __m256 b = _mm256_loadu_ps(e.bias + 8 * v);
#pragma GCC unroll 16
      for (int q = 0; q < P; ++q) acc[q * NV + v] = _mm256_add_ps(acc[q * NV + v], b);
    }
  }
  if (e.noise != nullptr) {
#pragma GCC unroll 16
    for (int q = 0; q < P; ++q) {
      const __m256 nz = _mm256_set1_ps(e.strength * e.noise[q * e.noise_step]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[q * NV + v] = _mm256_add_ps(acc[q * NV + v], nz);
    }
  }
  if (e.lrelu) {  // v > 0 ? v : alpha * v
    const __m256 alpha = _mm256_set1_ps(e.alpha), zero = _mm256_setzero_ps();
#pragma GCC unroll 32
    for (int i = 0; i < P * NV; ++i) {
      acc[i] = _mm256_blendv_ps(_mm256_mul_ps(acc[i], alpha), acc[i], _mm256_cmp_ps(acc[i], zero, _CMP_GT_OQ));
    }
  }
#pragma GCC unroll 16
  for (int q = 0; q < P; ++q) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(out + q * out_stride + 8 * v, acc[q * NV + v]);
  }
}

// Tiles of P (then P / 2, then 1) pixels over phase columns [j0, j1), all reading the taps `mask`.
template <int NV, int P>
__attribute__((target("avx2,fma"))) void RunAvx2(const RowContext& r, const ColumnPhase& ph, int mask, int j0,
                                                 int j1, int oc0) {
  const Conv3x3Params& p = *r.p;
  const float* xs[kMaxTaps];
  const float* ws[kMaxTaps];
  int lens[kMaxTaps];
  const int64_t out_stride = static_cast<int64_t>(ph.step) * p.k;
  int j = j0;
  const float* chunk = r.packed + static_cast<int64_t>(9) * p.c * oc0;  // [9, c, 8 * NV] (PackWeights)
  const Epilogue& pe = p.epilogue;
  TileEpilogue e{pe.bias == nullptr ? nullptr : pe.bias + oc0, nullptr, ph.step, pe.noise_strength, pe.lrelu, pe.alpha};
  // Every tile of the run reads the same taps, shifted by its first column: one tap list for the run.
  const int n = TileTaps(r, ph, mask, j0, chunk, 8 * NV, xs, ws, lens);
  const auto tile = [&](auto fn, int width) {
    const int col = ph.step * j + ph.b;
    e.noise = r.noise_row == nullptr ? nullptr : r.noise_row + col;
    fn(xs, ws, lens, n, static_cast<int64_t>(j - j0) * p.c, p.c, 8 * NV, r.out_row + static_cast<int64_t>(col) * p.k + oc0, out_stride, e);
    j += width;
  };
  while (j + P <= j1) tile(TileAvx2<NV, P>, P);
  if (P >= 4 && j + P / 2 <= j1) tile(TileAvx2<NV, (P >= 4 ? P / 2 : 1)>, P / 2);
  while (j < j1) tile(TileAvx2<NV, 1>, 1);
}

// Register budget (16 ymm): P * NV accumulators + NV weights + 1 broadcast.
template <int NV>
void RunChunk(const RowContext& r, const ColumnPhase& ph, int mask, int j0, int j1, int oc0);
template <>
void RunChunk<3>(const RowContext& r, const ColumnPhase& ph, int mask, int j0, int j1, int oc0) {
  RunAvx2<3, 4>(r, ph, mask, j0, j1, oc0);
}
template <>
void RunChunk<2>(const RowContext& r, const ColumnPhase& ph, int mask, int j0, int j1, int oc0) {
  RunAvx2<2, 6>(r, ph, mask, j0, j1, oc0);
}
template <>
void RunChunk<1>(const RowContext& r, const ColumnPhase& ph, int mask, int j0, int j1, int oc0) {
  RunAvx2<1, 12>(r, ph, mask, j0, j1, oc0);
}

void RowAvx2(const RowContext& r) {
  const Conv3x3Params& p = *r.p;
  const std::vector<ColumnPhase> phases = ColumnPhases(p);
  int oc0 = 0;
  for (int vecs = p.k / 8; vecs > 0;) {
    const int nv = ChunkVectors(vecs);
    for (const ColumnPhase& ph : phases) {
      int j0 = 0;
      while (j0 < ph.count) {  // runs of columns with the same taps
        const int mask = ColumnMask(ph, p.in_w, j0);
        int j1 = j0 + 1;
        while (j1 < ph.count && ColumnMask(ph, p.in_w, j1) == mask) ++j1;
        if (nv == 3) RunChunk<3>(r, ph, mask, j0, j1, oc0);
        if (nv == 2) RunChunk<2>(r, ph, mask, j0, j1, oc0);
        if (nv == 1) RunChunk<1>(r, ph, mask, j0, j1, oc0);
        j0 = j1;
      }
    }
    oc0 += 8 * nv;
    vecs -= nv;
  }
}

#endif  // __x86_64__ && __GNUC__

void Rows(const Conv3x3Params& p, const float* x, const float* w, const float* packed, float* y, int64_t begin,
          int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const int img = static_cast<int>(row / p.out_h), oy = static_cast<int>(row % p.out_h);
    RowContext r;
    r.p = &p;
    r.x_img = x + static_cast<int64_t>(img) * p.in_h * p.in_w * p.c;
    r.w = w;
    r.packed = packed;
    r.noise_row = p.epilogue.NoiseRow(img, oy, p.out_h, p.out_w);
    r.out_row = y + row * p.out_w * p.k;
    r.rows = RowTaps(p, oy, r.in_row, r.k_row);
#if defined(__x86_64__) && defined(__GNUC__)
    if (UseAvx2() && p.k % 8 == 0) {
      RowAvx2(r);
      continue;
    }
#endif
    RowScalar(r);
  }
}

}  // namespace

void Conv3x3Cpu(const CpuRunner& runner, const Conv3x3Params& p, const float* x, const float* w, float* y) {
  const int64_t rows = static_cast<int64_t>(p.n) * p.out_h;
  const double macs = static_cast<double>(p.out_w) * p.k * p.c * (p.transposed ? 2.25 : 9.0);
  const CpuCost cost{3.0 * p.in_w * p.c * sizeof(float), static_cast<double>(p.out_w) * p.k * sizeof(float), macs / 8};
  const bool vectorized = UseAvx2() && p.k % 8 == 0;
  const std::vector<float> packed = vectorized ? PackWeights(p, w) : std::vector<float>();
  runner.ParallelFor(rows, cost, 1, [&](int64_t begin, int64_t end) { Rows(p, x, w, packed.data(), y, begin, end); });
}

}  // namespace tf_distill
