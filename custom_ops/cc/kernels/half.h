// IEEE binary16 as TensorFlow (Eigen::half) and CUDA (__half) store it: 16 bits, converted to
// and from float with round-to-nearest-even, so that the CPU kernels need neither Eigen nor
// the CUDA headers. The op wrappers pass Eigen::half buffers as Half, the CUDA kernels read
// them as __half (all three are the same 2 bytes).
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_HALF_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_HALF_H_

#include <cstdint>
#include <cstring>

namespace tf_distill {

// float -> binary16, round to nearest even; overflow gives infinity, NaN the quiet NaN 0x7e00
// (with the sign), as Eigen::half does.
inline uint16_t FloatToHalfBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u >= 0x47800000u) {  // |f| >= 65536 (beyond the half range), inf or NaN
    return sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u);
  }
  if (u < 0x38800000u) {  // |f| < 2^-14: a half subnormal or zero. Adding 0.5 leaves the rounded
    // multiple of 2^-24 in the low mantissa bits (the FPU rounds to nearest even).
    float a;
    std::memcpy(&a, &u, sizeof(a));
    a += 0.5f;
    uint32_t r;
    std::memcpy(&r, &a, sizeof(r));
    return sign | static_cast<uint16_t>(r - 0x3f000000u);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even (a carry
  // into the exponent is the right result, up to infinity).
  const uint32_t odd = (u >> 13) & 1u;
  u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;
  return sign | static_cast<uint16_t>(u >> 13);
}

// binary16 -> float (exact).
inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1fu) {
    u = sign | 0x7f800000u | (mant << 13);  // inf, NaN
  } else if (exp != 0) {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  } else {  // zero or subnormal: mant * 2^-24, exact in float
    float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
    std::memcpy(&u, &f, sizeof(u));
    u |= sign;
  }
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

struct Half {
  uint16_t bits;
  Half() = default;
  explicit Half(float f) : bits(FloatToHalfBits(f)) {}
  explicit operator float() const { return HalfBitsToFloat(bits); }
};

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_HALF_H_
