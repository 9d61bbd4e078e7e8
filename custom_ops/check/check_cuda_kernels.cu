// Checks the CUDA kernels of the custom ops without TensorFlow: every CUDA kernel runs on the
// GPU against the CPU kernels (upfirdn2d and its gradient, fused_bias_act and its gradient
// with the bias gradient; float32 and float16) over the op configurations of the reference
// fixtures (/work/shared/fixtures/reference/ops_reference.npz) plus a few with many channels
// (the CPU kernels' vector paths, several GPU blocks), inputs from a fixed-seed generator. The
// CPU kernels are checked as well, against naive loops written from the spec (B.1, B.2); the
// upfirdn2d gradient against the adjoint of the forward loop, which checks its pads too.
//
// Build and run from the repository root (nvcc alone, no TensorFlow):
//   nvcc -O2 -std=c++17 -I. -o check_cuda_kernels custom_ops/check/check_cuda_kernels.cu \
//       custom_ops/cc/kernels/*_kernels.cu custom_ops/cc/kernels/*_kernels.cc
//   ./check_cuda_kernels              # GPU vs CPU kernels, CPU kernels vs naive loops
//   ./check_cuda_kernels --cpu-only   # CPU kernels vs naive loops only (no GPU needed)
// Prints one row per comparison: the largest absolute error and that error relative to the
// largest reference value, against the tolerance of the dtype.
// Exit status: 0 all within tolerance, 1 some comparison failed (or a CUDA error), 2 no usable
// GPU (nothing checked), 3 bad arguments.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "custom_ops/cc/kernels/fused_bias_act.h"
#include "custom_ops/cc/kernels/half.h"
#include "custom_ops/cc/kernels/parallel.h"
#include "custom_ops/cc/kernels/upfirdn2d.h"

namespace tf_distill {
namespace {

constexpr int kExitFail = 1, kExitNoGpu = 2, kExitUsage = 3;

// ------------------------------------------------------------------ element types, inputs

float ToFloat(float v) { return v; }
float ToFloat(Half v) { return static_cast<float>(v); }
template <typename T>
T FromFloat(float v) {
  return static_cast<T>(v);
}
template <typename T>
const char* DtypeName();
template <>
const char* DtypeName<float>() { return "float32"; }
template <>
const char* DtypeName<Half>() { return "float16"; }
// Largest error relative to the largest reference value: float32 accumulation-order noise;
// for float16 one rounding of the output (2^-11 relative) and one ulp between two roundings.
template <typename T>
double Tolerance();
template <>
double Tolerance<float>() { return 1e-5; }
template <>
double Tolerance<Half>() { return 2e-3; }

// splitmix64 + Box-Muller: the same inputs on every machine.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform() { return (static_cast<double>(Next() >> 11) + 0.5) / 9007199254740992.0; }  // (0, 1)
  float Normal() {
    return static_cast<float>(std::sqrt(-2.0 * std::log(Uniform())) * std::cos(6.283185307179586 * Uniform()));
  }

 private:
  uint64_t s_;
};

template <typename T>
std::vector<T> RandomNormal(Rng* rng, size_t n) {
  std::vector<T> v(n);
  for (auto& e : v) e = FromFloat<T>(rng->Normal());
  return v;
}

template <typename T>
std::vector<double> AsDouble(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = ToFloat(v[i]);
  return d;
}

// ------------------------------------------------------------------------- the report

struct Report {
  int rows = 0, failures = 0;

  void Header() const {
    std::printf("%-16s %-26s %-8s %-14s %-13s %11s %11s %9s  %s\n", "kernel", "case", "dtype", "output", "compared",
                "max_abs", "rel", "tol", "status");
  }
  // Compares `got` with `want` (same length), relative to the largest |want|.
  void Compare(const char* kernel, const std::string& name, const char* dtype, const char* output,
               const char* compared, const std::vector<double>& got, const std::vector<double>& want, double tol) {
    double max_abs = 0.0, scale = 0.0;
    bool finite = got.size() == want.size();
    for (size_t i = 0; finite && i < got.size(); ++i) {
      if (!std::isfinite(got[i]) || !std::isfinite(want[i])) finite = false;
      max_abs = std::max(max_abs, std::abs(got[i] - want[i]));
      scale = std::max(scale, std::abs(want[i]));
    }
    const double rel = scale > 0.0 ? max_abs / scale : max_abs;
    const bool ok = finite && rel <= tol;
    Row(kernel, name, dtype, output, compared, max_abs, finite ? rel : INFINITY, tol, ok ? "ok" : "FAIL");
  }
  void Row(const char* kernel, const std::string& name, const char* dtype, const char* output, const char* compared,
           double max_abs, double rel, double tol, const char* status) {
    std::printf("%-16s %-26s %-8s %-14s %-13s %11.3e %11.3e %9.1e  %s\n", kernel, name.c_str(), dtype, output,
                compared, max_abs, rel, tol, status);
    ++rows;
    if (std::strcmp(status, "ok") != 0) ++failures;
  }
  void Error(const char* kernel, const std::string& name, const char* dtype, const std::string& what) {
    std::printf("%-16s %-26s %-8s error: %s\n", kernel, name.c_str(), dtype, what.c_str());
    ++rows;
    ++failures;
  }
};

// ------------------------------------------------------------------------------ the GPU

class Gpu {
 public:
  ~Gpu() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  // Empty string when a GPU is there, else why not.
  std::string Open() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    if (count == 0) return "no CUDA device";
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) name_ = prop.name;
    const cudaError_t s = cudaStreamCreate(&stream_);
    if (s != cudaSuccess) return std::string("cudaStreamCreate: ") + cudaGetErrorString(s);
    return std::string();
  }
  cudaStream_t stream() const { return stream_; }
  const std::string& name() const { return name_; }

 private:
  cudaStream_t stream_ = nullptr;
  std::string name_;
};

// Device memory holding a copy of a host vector (or `n` uninitialised elements).
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { Check(cudaMalloc(&p_, std::max<size_t>(1, n) * sizeof(T)), "cudaMalloc"); }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) {
    if (error_.empty()) Check(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() { return static_cast<T*>(p_); }
  std::vector<T> Download() {
    std::vector<T> h(n_);
    if (error_.empty()) Check(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return h;
  }
  const std::string& error() const { return error_; }

 private:
  void Check(cudaError_t err, const char* what) {
    if (err != cudaSuccess && error_.empty()) error_ = std::string(what) + ": " + cudaGetErrorString(err);
  }
  void* p_ = nullptr;
  size_t n_;
  std::string error_;
};

// Waits for the stream; the first error among `launch`, the kernel run and the buffers.
std::string Finish(cudaStream_t stream, const std::string& launch, std::initializer_list<const std::string*> buffers) {
  if (!launch.empty()) return launch;
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return std::string("kernel failed: ") + cudaGetErrorString(err);
  for (const std::string* b : buffers) {
    if (!b->empty()) return *b;
  }
  return std::string();
}

// -------------------------------------------------------------------------- upfirdn2d

enum class Taps { kBlur, kRandom };

struct UpFirDnCase {
  const char* name;
  int n, h, w, c;  // NHWC
  int kh, kw;
  Taps taps;
  float gain;  // blur: kernel sum
  int up, down, pad0, pad1;  // the same pads on both axes, as in the fixtures
};

// The fixtures' eight configurations (x [2, 9, 7, 3] in NHWC; their blur kernels are
// outer([1,3,3,1]) normalised to sum 1 or 4, the asymmetric ones random 3x4), then shapes with
// many channels for the CPU kernels' vector paths (the StyleGAN blur, 2x down- and upsampling,
// the 2-D path with a channel tail).
const UpFirDnCase kUpFirDnCases[] = {
    {"blur_pad11", 2, 9, 7, 3, 4, 4, Taps::kBlur, 1.0f, 1, 1, 1, 1},
    {"blur_pad11_k4x4", 2, 9, 7, 3, 4, 4, Taps::kBlur, 4.0f, 1, 1, 1, 1},
    {"blur_pad22", 2, 9, 7, 3, 4, 4, Taps::kBlur, 1.0f, 1, 1, 2, 2},
    {"down2_pad11", 2, 9, 7, 3, 4, 4, Taps::kBlur, 1.0f, 1, 2, 1, 1},
    {"up2_pad21_k4x4", 2, 9, 7, 3, 4, 4, Taps::kBlur, 4.0f, 2, 1, 2, 1},
    {"asym_up2_pad12", 2, 9, 7, 3, 3, 4, Taps::kRandom, 1.0f, 2, 1, 1, 2},
    {"asym_down2_pad21", 2, 9, 7, 3, 3, 4, Taps::kRandom, 1.0f, 1, 2, 2, 1},
    {"asym_up3_down2_negpad", 2, 9, 7, 3, 3, 4, Taps::kRandom, 1.0f, 3, 2, -1, 2},
    {"blur_pad11_c128", 2, 16, 16, 128, 4, 4, Taps::kBlur, 4.0f, 1, 1, 1, 1},
    {"down2_pad11_c64", 2, 16, 16, 64, 4, 4, Taps::kBlur, 1.0f, 1, 2, 1, 1},
    {"up2_pad21_c64", 2, 8, 8, 64, 4, 4, Taps::kBlur, 4.0f, 2, 1, 2, 1},
    {"asym_up2_pad12_c40", 1, 8, 8, 40, 3, 4, Taps::kRandom, 1.0f, 2, 1, 1, 2},
};

std::vector<float> MakeTaps(const UpFirDnCase& cs, Rng* rng) {
  std::vector<float> k(static_cast<size_t>(cs.kh) * cs.kw);
  if (cs.taps == Taps::kRandom) {
    for (auto& v : k) v = static_cast<float>(rng->Uniform());
    return k;
  }
  const float b[4] = {1, 3, 3, 1};
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) k[i * 4 + j] = b[i] * b[j] / 64.0f * cs.gain;
  }
  return k;
}

// Parameters of upfirdn2d on x [n, in_h, in_w, c] with a [kh, kw] kernel; false when the
// output would be empty.
bool MakeParams(int n, int in_h, int in_w, int c, int kh, int kw, int up, int down, int py0, int py1, int px0,
                int px1, UpFirDn2dParams* p) {
  const int64_t out_h = UpFirDn2dOutputSize(in_h, kh, up, down, py0, py1);
  const int64_t out_w = UpFirDn2dOutputSize(in_w, kw, up, down, px0, px1);
  if (out_h < 1 || out_w < 1) return false;
  *p = UpFirDn2dParams{n, in_h, in_w, c, static_cast<int>(out_h), static_cast<int>(out_w), kh, kw, up, down, py0, px0};
  return true;
}

// Calls f(output index, input index, kernel index) for every product the op sums (spec B.1,
// written out without the kernels' tap tables).
template <typename F>
void ForEachProduct(const UpFirDn2dParams& p, F f) {
  for (int n = 0; n < p.n; ++n) {
    for (int oy = 0; oy < p.out_h; ++oy) {
      for (int ox = 0; ox < p.out_w; ++ox) {
        for (int ty = 0; ty < p.kh; ++ty) {
          const int jy = oy * p.down + ty - p.pad_y0;  // position in the upsampled input
          if (jy < 0 || jy % p.up != 0 || jy / p.up >= p.in_h) continue;
          for (int tx = 0; tx < p.kw; ++tx) {
            const int jx = ox * p.down + tx - p.pad_x0;
            if (jx < 0 || jx % p.up != 0 || jx / p.up >= p.in_w) continue;
            const int64_t yi = ((static_cast<int64_t>(n) * p.out_h + oy) * p.out_w + ox) * p.c;
            const int64_t xi = ((static_cast<int64_t>(n) * p.in_h + jy / p.up) * p.in_w + jx / p.up) * p.c;
            const int ki = (p.kh - 1 - ty) * p.kw + (p.kw - 1 - tx);  // true convolution
            for (int c = 0; c < p.c; ++c) f(yi + c, xi + c, ki);
          }
        }
      }
    }
  }
}

int64_t OutputCount(const UpFirDn2dParams& p) { return static_cast<int64_t>(p.n) * p.out_h * p.out_w * p.c; }

template <typename T>
std::vector<T> RunUpFirDnCpu(const UpFirDn2dParams& p, const std::vector<T>& x, const std::vector<T>& k) {
  std::vector<T> y(OutputCount(p));
  UpFirDn2dCpu(SerialCpuRunner(), p, x.data(), k.data(), y.data());
  return y;
}

template <typename T>
std::string RunUpFirDnGpu(const Gpu& gpu, const UpFirDn2dParams& p, const std::vector<T>& x,
                          const std::vector<T>& k, std::vector<T>* y) {
  DeviceBuffer<T> dx(x), dk(k), dy(OutputCount(p));
  const std::string err = Finish(gpu.stream(), UpFirDn2dGpu(gpu.stream(), p, dx.get(), dk.get(), dy.get()),
                                 {&dx.error(), &dk.error(), &dy.error()});
  *y = dy.Download();
  return err.empty() ? dy.error() : err;
}

template <typename T>
void CheckUpFirDn(const UpFirDnCase& cs, const Gpu* gpu, Report* report) {
  const char* dt = DtypeName<T>();
  const double tol = Tolerance<T>();
  Rng rng(0x5eed0000u + static_cast<uint64_t>(&cs - kUpFirDnCases));
  UpFirDn2dParams p, g;
  if (!MakeParams(cs.n, cs.h, cs.w, cs.c, cs.kh, cs.kw, cs.up, cs.down, cs.pad0, cs.pad1, cs.pad0, cs.pad1, &p)) {
    report->Error("upfirdn2d", cs.name, dt, "empty output");
    return;
  }
  std::vector<T> k;
  for (float v : MakeTaps(cs, &rng)) k.push_back(FromFloat<T>(v));
  const std::vector<T> x = RandomNormal<T>(&rng, static_cast<size_t>(cs.n) * cs.h * cs.w * cs.c);
  const std::vector<T> dy = RandomNormal<T>(&rng, OutputCount(p));
  // The gradient: the same op on dy with the flipped kernel, up and down swapped, and per axis
  // the pads (k - p0 - 1, in*up - out*down + p0 - up + 1).
  std::vector<T> k_flipped(k.rbegin(), k.rend());
  const int gy0 = cs.kh - cs.pad0 - 1, gy1 = cs.h * cs.up - p.out_h * cs.down + cs.pad0 - cs.up + 1;
  const int gx0 = cs.kw - cs.pad0 - 1, gx1 = cs.w * cs.up - p.out_w * cs.down + cs.pad0 - cs.up + 1;
  if (!MakeParams(cs.n, p.out_h, p.out_w, cs.c, cs.kh, cs.kw, cs.down, cs.up, gy0, gy1, gx0, gx1, &g) ||
      g.out_h != cs.h || g.out_w != cs.w) {
    report->Error("upfirdn2d_grad", cs.name, dt, "the gradient pads do not give back the input size");
    return;
  }

  const std::vector<T> y_cpu = RunUpFirDnCpu(p, x, k);
  const std::vector<T> dx_cpu = RunUpFirDnCpu(g, dy, k_flipped);
  const std::vector<double> xd = AsDouble(x), kd = AsDouble(k), dyd = AsDouble(dy);
  std::vector<double> y_ref(y_cpu.size(), 0.0), dx_ref(x.size(), 0.0);
  ForEachProduct(p, [&](int64_t yi, int64_t xi, int ki) {
    y_ref[yi] += xd[xi] * kd[ki];
    dx_ref[xi] += dyd[yi] * kd[ki];  // the adjoint: d(sum(y * dy)) / dx
  });
  report->Compare("upfirdn2d", cs.name, dt, "y", "cpu-vs-naive", AsDouble(y_cpu), y_ref, tol);
  report->Compare("upfirdn2d_grad", cs.name, dt, "dx", "cpu-vs-naive", AsDouble(dx_cpu), dx_ref, tol);
  if (gpu == nullptr) return;

  std::vector<T> y_gpu, dx_gpu;
  std::string err = RunUpFirDnGpu(*gpu, p, x, k, &y_gpu);
  if (!err.empty()) {
    report->Error("upfirdn2d", cs.name, dt, err);
  } else {
    report->Compare("upfirdn2d", cs.name, dt, "y", "gpu-vs-cpu", AsDouble(y_gpu), AsDouble(y_cpu), tol);
  }
  err = RunUpFirDnGpu(*gpu, g, dy, k_flipped, &dx_gpu);
  if (!err.empty()) {
    report->Error("upfirdn2d_grad", cs.name, dt, err);
  } else {
    report->Compare("upfirdn2d_grad", cs.name, dt, "dx", "gpu-vs-cpu", AsDouble(dx_gpu), AsDouble(dx_cpu), tol);
  }
}

// --------------------------------------------------------------------- fused_bias_act

struct FusedCase {
  const char* name;
  int rows, channels;  // x viewed as [rows, channels], the bias on the channels
  bool has_bias;
  bool linear;
  float alpha, gain;
};

// The fixture's configuration (x [3, 5, 4, 4] NCHW: 48 rows of 5 channels, lrelu 0.2, gain
// sqrt 2) and the other activations the op takes: linear, relu, no bias, a negative gain, and
// many channels.
const FusedCase kFusedCases[] = {
    {"fused_lrelu", 48, 5, true, false, 0.2f, 1.41421356f},
    {"fused_linear", 48, 5, true, true, 0.0f, 1.0f},
    {"fused_relu_nobias", 48, 5, false, false, 0.0f, 1.41421356f},
    {"fused_lrelu_neg_gain", 48, 5, true, false, 0.2f, -0.5f},
    {"fused_lrelu_c512", 256, 512, true, false, 0.2f, 1.41421356f},
    {"fused_linear_nobias_c96", 70, 96, false, true, 0.0f, 2.0f},
};

template <typename T>
void CheckFused(const FusedCase& cs, const Gpu* gpu, Report* report) {
  const char* dt = DtypeName<T>();
  const double tol = Tolerance<T>();
  Rng rng(0xb1a50000u + static_cast<uint64_t>(&cs - kFusedCases));
  FusedBiasActParams p{static_cast<int64_t>(cs.rows) * cs.channels, cs.channels, cs.has_bias, cs.linear, cs.alpha,
                       cs.gain};
  const std::vector<T> x = RandomNormal<T>(&rng, p.size);
  const std::vector<T> b = RandomNormal<T>(&rng, cs.has_bias ? cs.channels : 0);
  const std::vector<T> dy = RandomNormal<T>(&rng, p.size);
  const T* bias = cs.has_bias ? b.data() : nullptr;

  std::vector<T> y_cpu(p.size), dx_cpu(p.size), db_cpu(cs.channels);
  FusedBiasActCpu(SerialCpuRunner(), p, x.data(), bias, y_cpu.data());
  // The gradient reads the forward output (the CPU one, for both devices).
  FusedBiasActGradCpu(SerialCpuRunner(), p, dy.data(), y_cpu.data(), dx_cpu.data(), db_cpu.data());

  // Naive: the slope from the sign of the pre-activation x + b (spec B.2); db sums dx as stored.
  std::vector<double> y_ref(p.size), dx_ref(p.size), db_ref(cs.channels, 0.0);
  for (int64_t i = 0; i < p.size; ++i) {
    const int c = static_cast<int>(i % cs.channels);
    const float v = ToFloat(x[i]) + (cs.has_bias ? ToFloat(b[c]) : 0.0f);
    const double slope = cs.linear || v > 0.0f ? 1.0 : cs.alpha;
    y_ref[i] = static_cast<double>(v) * slope * cs.gain;
    dx_ref[i] = ToFloat(FromFloat<T>(static_cast<float>(static_cast<double>(ToFloat(dy[i])) * slope * cs.gain)));
    db_ref[c] += dx_ref[i];
  }
  report->Compare("fused_bias_act", cs.name, dt, "y", "cpu-vs-naive", AsDouble(y_cpu), y_ref, tol);
  report->Compare("fused_bias_act_g", cs.name, dt, "dx", "cpu-vs-naive", AsDouble(dx_cpu), dx_ref, tol);
  if (cs.has_bias) {
    report->Compare("fused_bias_act_g", cs.name, dt, "db", "cpu-vs-naive", AsDouble(db_cpu), db_ref, tol);
  }
  if (gpu == nullptr) return;

  {
    DeviceBuffer<T> dx_in(x), db_in(b), dy_out(p.size);
    const std::string err =
        Finish(gpu->stream(),
               FusedBiasActGpu(gpu->stream(), p, dx_in.get(), cs.has_bias ? db_in.get() : nullptr, dy_out.get()),
               {&dx_in.error(), &db_in.error(), &dy_out.error()});
    const std::vector<T> y_gpu = dy_out.Download();
    if (!err.empty() || !dy_out.error().empty()) {
      report->Error("fused_bias_act", cs.name, dt, err.empty() ? dy_out.error() : err);
    } else {
      report->Compare("fused_bias_act", cs.name, dt, "y", "gpu-vs-cpu", AsDouble(y_gpu), AsDouble(y_cpu), tol);
    }
  }
  DeviceBuffer<T> d_dy(dy), d_y(y_cpu), d_dx(p.size), d_db(cs.channels);
  DeviceBuffer<float> d_acc(cs.channels);
  const std::string err = Finish(gpu->stream(),
                                 FusedBiasActGradGpu(gpu->stream(), p, d_dy.get(), d_y.get(), d_dx.get(),
                                                     cs.has_bias ? d_acc.get() : nullptr,
                                                     cs.has_bias ? d_db.get() : nullptr),
                                 {&d_dy.error(), &d_y.error(), &d_dx.error(), &d_db.error(), &d_acc.error()});
  const std::vector<T> dx_gpu = d_dx.Download(), db_gpu = d_db.Download();
  if (!err.empty() || !d_dx.error().empty() || !d_db.error().empty()) {
    report->Error("fused_bias_act_g", cs.name, dt, !err.empty() ? err : d_dx.error() + d_db.error());
    return;
  }
  report->Compare("fused_bias_act_g", cs.name, dt, "dx", "gpu-vs-cpu", AsDouble(dx_gpu), AsDouble(dx_cpu), tol);
  if (cs.has_bias) {
    report->Compare("fused_bias_act_g", cs.name, dt, "db", "gpu-vs-cpu", AsDouble(db_gpu), AsDouble(db_cpu), tol);
  }
}

// --------------------------------------------------------------------------- half.h

// The kernels' float16 conversions (half.h) against CUDA's (host versions): every half value
// to float, and a spread of float bit patterns (with every rounding case near each) to half.
void CheckHalfConversions(Report* report) {
  int64_t mismatches = 0, checked = 0;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    __half_raw raw;
    raw.x = static_cast<unsigned short>(h);
    const float want = __half2float(__half(raw)), got = HalfBitsToFloat(static_cast<uint16_t>(h));
    ++checked;
    if (std::isnan(want) ? !std::isnan(got) : std::memcmp(&want, &got, sizeof(float)) != 0) ++mismatches;
  }
  for (uint64_t u = 0; u <= 0xffffffffull; u += 65521) {
    for (uint32_t d = 0; d < 16; ++d) {
      const uint32_t bits = static_cast<uint32_t>(u) ^ (d << 11);  // the bits around the rounding point
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      const __half_raw want = static_cast<__half_raw>(__float2half_rn(f));
      const uint16_t got = FloatToHalfBits(f);
      ++checked;
      const bool nan = std::isnan(f);
      if (nan ? (got & 0x7c00u) != 0x7c00u || (got & 0x3ffu) == 0 : got != want.x) ++mismatches;
    }
  }
  report->Row("half.h", "float16_conversions", "float16", "bits", "cpu-vs-cuda", static_cast<double>(mismatches),
              static_cast<double>(mismatches) / checked, 0.0, mismatches == 0 ? "ok" : "FAIL");
}

int Main(int argc, char** argv) {
  bool cpu_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cpu-only") == 0) {
      cpu_only = true;
    } else {
      std::fprintf(stderr, "usage: %s [--cpu-only]\n", argv[0]);
      return kExitUsage;
    }
  }
  Gpu gpu;
  if (!cpu_only) {
    const std::string why = gpu.Open();
    if (!why.empty()) {
      std::printf("check_cuda_kernels: no GPU (%s): nothing checked; run it on a machine with an NVIDIA GPU "
                  "and driver, or pass --cpu-only to check the CPU kernels\n", why.c_str());
      return kExitNoGpu;
    }
    std::printf("check_cuda_kernels: CUDA kernels on %s against the CPU kernels\n", gpu.name().c_str());
  } else {
    std::printf("check_cuda_kernels: --cpu-only: CPU kernels against naive loops, no GPU used\n");
  }
  const Gpu* device = cpu_only ? nullptr : &gpu;
  Report report;
  report.Header();
  CheckHalfConversions(&report);
  for (const UpFirDnCase& cs : kUpFirDnCases) {
    CheckUpFirDn<float>(cs, device, &report);
    CheckUpFirDn<Half>(cs, device, &report);
  }
  for (const FusedCase& cs : kFusedCases) {
    CheckFused<float>(cs, device, &report);
    CheckFused<Half>(cs, device, &report);
  }
  std::printf("check_cuda_kernels: %d of %d comparisons failed\n", report.failures, report.rows);
  return report.failures == 0 ? 0 : kExitFail;
}

}  // namespace
}  // namespace tf_distill

int main(int argc, char** argv) { return tf_distill::Main(argc, argv); }
