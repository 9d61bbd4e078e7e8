// The CPU kernel of conv3x3 (conv3x3.h): direct convolution, register-blocked for AVX2 + FMA (16
// vector registers) or AVX-512VL (the same 8-lane vectors in 32 registers: conv3x3_tiles.inc, compiled
// for both), multithreaded through a CpuRunner, no TensorFlow header.
//
// An output row is cut into runs of output columns that read the same taps (the borders read
// fewer), and a run into tiles of P pixels x NV vectors of 8 output channels whose sums stay
// in registers while the taps and input channels stream past: per input channel, NV weight
// vectors are loaded once and each of the P input values is broadcast once, for P * NV FMAs.
// The epilogue (bias, noise, leaky ReLU) is applied to the sums in registers before they are stored, or,
// with a projection (a generator's last conv and its ToRGB), the tile's outputs are projected to a few
// channels in registers and only those are added to the (zeroed) output row.
// Taps that continue each other in both input and weights (neighbouring columns of a kernel row) run
// as one longer pass, and each run's tap list is built once for all its tiles.
//
// 32 registers against 16, in-process A/B on 2 Zen 4 cores at batch 1: the student's layers 1.10-1.16x
// faster on two threads (40 channels at 256 px 85.8 vs 74.3 GMAC/s, 160 -> 80 transposed 71.2 vs
// 64.5), 1.01-1.04x on one; the whole student 1-2% faster. Zen 4 runs 16-lane vectors at the width of
// two 8-lane ones, so 8-lane vectors keep the student's 40 channels free of idle lanes.
#include "custom_ops/cc/kernels/conv3x3.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "custom_ops/cc/kernels/cpu_isa.h"
#include "custom_ops/cc/kernels/per_sample.h"

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
    phases.push_back({0, p.in_w + 1, 2, {2, 0, 0}, {-1, 0, 0}, 2});  // input columns ascending
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
  const float* project_t;  // this sample's projection transposed, [m, k], or nullptr (Conv3x3Params::project)
  int rows, in_row[3], k_row[3];
};

// Where kernel column kw sits among its row's three in the packed weights (PackWeights): in order for
// the stride-1 conv; for the transposed one kw = 2, 0, 1, so that the even output columns' two taps
// (kw 2 on input column j - 1, kw 0 on j) continue each other in weights as they do in the input and
// merge into one pass.
int PackedColumn(const Conv3x3Params& p, int kw) { return p.transposed ? (kw + 1) % 3 : kw; }

// Pointers for the taps of a tile starting at phase column j: (input pixel, weight tap, input
// channels to read). A tap's weights start at w + tap * c * ldw, ldw floats per input channel. Taps
// whose inputs and weights both continue the previous tap's (neighbouring columns of one kernel row;
// `packed`: w is PackWeights' layout; not when x carries channels the conv does not read, x_c > c) are merged
// into one longer run, so that a tile's inner loop runs fewer, longer passes.
int TileTaps(const RowContext& r, const ColumnPhase& ph, int mask, int j, const float* w, int64_t ldw, bool packed,
             const float** xs, const float** ws, int* lens) {
  const Conv3x3Params& p = *r.p;
  int n = 0;
  for (int a = 0; a < r.rows; ++a) {
    for (int t = 0; t < ph.taps; ++t) {
      if (!(mask >> t & 1)) continue;
      const float* x = r.x_img + (static_cast<int64_t>(r.in_row[a]) * p.in_w + j + ph.dx[t]) * p.x_c;
      const int column = packed ? PackedColumn(p, ph.kw[t]) : ph.kw[t];
      const float* wt = w + static_cast<int64_t>(r.k_row[a] * 3 + column) * p.c * ldw;
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
  std::vector<float> values(r.project_t != nullptr ? p.k : 0);  // a pixel's k outputs, before the projection
  for (const ColumnPhase& ph : ColumnPhases(p)) {
    for (int j = 0; j < ph.count; ++j) {
      const int n = TileTaps(r, ph, ColumnMask(ph, p.in_w, j), j, r.w, p.k, false, xs, ws, lens);
      const int col = ph.step * j + ph.b;
      float* out = r.project_t != nullptr ? values.data() : r.out_row + static_cast<int64_t>(col) * p.k;
      for (int o = 0; o < p.k; ++o) out[o] = 0.0f;
      for (int t = 0; t < n; ++t) {
        for (int i = 0; i < lens[t]; ++i) {
          const float v = xs[t][i];
          const float* wr = ws[t] + static_cast<int64_t>(i) * p.k;
          for (int o = 0; o < p.k; ++o) out[o] += v * wr[o];
        }
      }
      for (int o = 0; o < p.k; ++o) out[o] = p.epilogue.Value(r.noise_row, col, o, out[o]);
      for (int o = 0; r.project_t != nullptr && o < p.m; ++o) {
        float sum = 0.0f;
        for (int e = 0; e < p.k; ++e) sum += out[e] * r.project_t[static_cast<int64_t>(o) * p.k + e];
        r.out_row[static_cast<int64_t>(col) * p.m + o] = sum;
      }
    }
  }
}

// Output channels (k a multiple of 8) go in chunks of vectors of 8: the vectors of the next chunk when
// `vecs` remain. With 16 registers (AVX2) chunks of 3 where possible, 2 or 1 at the end (5 = 3 + 2,
// 4 = 2 + 2); with 32 (`wide`, AVX-512VL) chunks of 5 (the student's 40 channels in one, so each input
// value is broadcast once), of 4 where 5 would leave a lone vector or a 6 (3 + 3 for 6).
int ChunkVectors(int vecs, bool wide) {
  if (wide) return vecs < 5 ? vecs : vecs == 6 ? 3 : (vecs == 7 || vecs == 8 || vecs % 5 == 1) ? 4 : 5;
  return vecs == 1 ? 1 : (vecs == 2 || vecs == 4) ? 2 : 3;
}

// The weights [3, 3, c, k] regrouped chunk by chunk, each chunk [3 * 3, c, 8 * nv] at 9 * c * oc0 (the
// columns of a kernel row in PackedColumn's order), so that a tile streams through contiguous weights
// (whole cache lines) instead of strided slices.
std::vector<float> PackWeights(const Conv3x3Params& p, const float* w, bool wide) {
  std::vector<float> packed(static_cast<size_t>(9) * p.c * p.k);
  int oc0 = 0;
  for (int vecs = p.k / 8; vecs > 0;) {
    const int width = 8 * ChunkVectors(vecs, wide);
    float* dst = packed.data() + static_cast<int64_t>(9) * p.c * oc0;
    for (int tap = 0; tap < 9; ++tap) {
      const int kh = tap / 3, kw = tap % 3;
      for (int i = 0; i < p.c; ++i) {
        const float* src = w + (static_cast<int64_t>(tap) * p.c + i) * p.k + oc0;
        float* out = dst + ((static_cast<int64_t>(kh) * 3 + PackedColumn(p, kw)) * p.c + i) * width;
        for (int o = 0; o < width; ++o) out[o] = src[o];
      }
    }
    oc0 += width;
    vecs -= width / 8;
  }
  return packed;
}

#if defined(__x86_64__) && defined(__GNUC__)

// P output pixels x NV * 8 output channels. xs[t]: the tile's first input pixel for tap t (the
// others follow at stride x_c); ws[t]: that tap's weights at the tile's first output channel.
// The epilogue of a tile: bias at its first output channel, noise at its first pixel (nullptr: none), and
// the projection's weights [m, project_ld] at its first output channel (nullptr: none; the tile then adds
// its m projected sums per pixel to the output instead of storing its channels).
struct TileEpilogue {
  const float* bias;
  const float* noise;
  int noise_step;
  float strength;
  bool lrelu;
  float alpha;
  const float* project;
  int project_ld, m;
};

namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
constexpr bool kWideRegisters = false;
#include "custom_ops/cc/kernels/conv3x3_tiles.inc"
#pragma GCC pop_options
}  // namespace avx2

namespace avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")
constexpr bool kWideRegisters = true;
#include "custom_ops/cc/kernels/conv3x3_tiles.inc"
#pragma GCC pop_options
}  // namespace avx512

#endif  // __x86_64__ && __GNUC__

int OutputChannels(const Conv3x3Params& p) { return p.project != nullptr ? p.m : p.k; }

// Which loops run: plain ones, or the vector tiles for 16 (AVX2) or 32 (AVX-512VL) registers.
enum class Path { kScalar, kAvx2, kAvx512Vl };

Path ChoosePath(const Conv3x3Params& p) {
  if (p.k % 8 != 0) return Path::kScalar;
#if defined(__x86_64__) && defined(__GNUC__)
  if (UseAvx512() && __builtin_cpu_supports("avx512vl")) return Path::kAvx512Vl;
  if (UseAvx2()) return Path::kAvx2;
#endif
  return Path::kScalar;
}

void Rows(const Conv3x3Params& p, Path path, const float* x, const float* w, const float* packed,
          const float* project_t, float* y, int64_t begin, int64_t end) {
  const int64_t w_stride = p.per_sample_weights ? int64_t{9} * p.c * p.k : 0;  // weights, packed or not
  for (int64_t row = begin; row < end; ++row) {
    const int img = static_cast<int>(row / p.out_h), oy = static_cast<int>(row % p.out_h);
    RowContext r;
    r.p = &p;
    r.x_img = x + static_cast<int64_t>(img) * p.in_h * p.in_w * p.x_c;
    r.w = w + img * w_stride;
    r.packed = packed + img * w_stride;
    r.noise_row = p.epilogue.NoiseRow(img, oy, p.out_h, p.out_w);
    r.project_t = p.project != nullptr ? project_t + static_cast<int64_t>(img) * p.m * p.k : nullptr;
    r.out_row = y + row * p.out_w * OutputChannels(p);
    if (p.project != nullptr) {  // chunks of output channels add their projections to it
      std::fill(r.out_row, r.out_row + static_cast<int64_t>(p.out_w) * p.m, 0.0f);
    }
    r.rows = RowTaps(p, oy, r.in_row, r.k_row);
#if defined(__x86_64__) && defined(__GNUC__)
    if (path == Path::kAvx512Vl) {
      avx512::Row(r);
      continue;
    }
    if (path == Path::kAvx2) {
      avx2::Row(r);
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
  const CpuCost cost{3.0 * p.in_w * p.x_c * sizeof(float),
                     static_cast<double>(p.out_w) * OutputChannels(p) * sizeof(float), macs / 8};
  const Path path = ChoosePath(p);
  std::vector<float> packed;
  if (path != Path::kScalar) {
    const int64_t size = int64_t{9} * p.c * p.k;
    for (int i = 0; i < (p.per_sample_weights ? p.n : 1); ++i) {
      const std::vector<float> one = PackWeights(p, w + i * size, path == Path::kAvx512Vl);
      packed.insert(packed.end(), one.begin(), one.end());
    }
  }
  // [n, m, k]: each output's weights contiguous
  const std::vector<float> project_t =
      p.project != nullptr ? TransposeEachSample(p.project, p.n, p.k, p.m, p.k) : std::vector<float>();
  runner.ParallelFor(rows, cost, 1, [&](int64_t begin, int64_t end) {
    Rows(p, path, x, w, packed.data(), project_t.data(), y, begin, end);
  });
}

}  // namespace tf_distill
