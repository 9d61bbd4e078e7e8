// Fused bias + activation + gain on the last (channel) axis:
//   y = act(x + b) * gain, act in {linear, relu, lrelu(alpha)}; relu is lrelu with alpha 0.
// The gradient op takes the forward output y (not x): for gain >= 0, y > 0 exactly where
// x + b > 0 (at x + b == 0 the negative slope is used, like tf.nn.leaky_relu), for gain < 0
// where y < 0. That needs alpha >= 0, which the op kernels enforce.
//   dx = dy * gain * (positive ? 1 : alpha)
// and, when asked, the bias gradient db = sum of dx over all but the last axis, fused into the
// same pass (accumulated in float).
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_FUSED_BIAS_ACT_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_FUSED_BIAS_ACT_H_

#include <cstdint>
#include <string>

// Includers define EIGEN_USE_THREADS (C++) or EIGEN_USE_GPU (CUDA) before this.
#include "unsupported/Eigen/CXX11/Tensor"

namespace tf_distill {

struct FusedBiasActParams {
  int64_t size;      // number of elements of x / y (fits in int32, checked by the kernel)
  int channels;      // length of the last axis (the bias axis), >= 1 when size > 0
  bool has_bias;     // forward: bias has `channels` elements; gradient: also compute db
  bool linear;       // act == "linear": no activation
  float alpha;       // negative slope (0 for relu), >= 0
  float gain;
};

namespace functor {

template <typename Device, typename T>
struct FusedBiasActFunctor {
  // y = act(x + b) * gain
  std::string operator()(const Device& d, const FusedBiasActParams& p, const T* x, const T* b, T* y);
};

template <typename Device, typename T>
struct FusedBiasActGradFunctor {
  // dx = dy * act'(y) * gain, with y the forward output; if p.has_bias also db[c] = sum of
  // dx[..., c], using `db_acc` (device memory for `channels` floats) as scratch.
  std::string operator()(const Device& d, const FusedBiasActParams& p, const T* dy, const T* y, T* dx,
                         float* db_acc, T* db);
};

#if GOOGLE_CUDA
// Defined in fused_bias_act_kernels.cu.cc (nvcc).
#define TF_DISTILL_DECLARE_GPU(T)                                                                        \
  template <>                                                                                            \
  std::string FusedBiasActFunctor<Eigen::GpuDevice, T>::operator()(                                      \
      const Eigen::GpuDevice& d, const FusedBiasActParams& p, const T* x, const T* b, T* y);              \
  template <>                                                                                            \
  std::string FusedBiasActGradFunctor<Eigen::GpuDevice, T>::operator()(                                  \
      const Eigen::GpuDevice& d, const FusedBiasActParams& p, const T* dy, const T* y, T* dx, float* db_acc, \
      T* db);
TF_DISTILL_DECLARE_GPU(float)
TF_DISTILL_DECLARE_GPU(Eigen::half)
#undef TF_DISTILL_DECLARE_GPU
#endif  // GOOGLE_CUDA

}  // namespace functor
}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_FUSED_BIAS_ACT_H_
