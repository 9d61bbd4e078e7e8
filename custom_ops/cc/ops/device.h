// What the op wrappers hand the TensorFlow-free kernels (custom_ops/cc/kernels/): TensorFlow's
// CPU thread pool as a CpuRunner, its CUDA stream, and tensor data as the kernels' types
// (Eigen::half as Half). GPU kernels use only the stream of the Eigen GPU device: TF 2.21
// wheels are built against CUDA 12.5 and nvcc here is 13.0, whose cudaDeviceProp layouts
// differ, so Eigen's device-property helpers are not trusted.
// Includers define EIGEN_USE_THREADS (and EIGEN_USE_GPU under GOOGLE_CUDA) first.
#ifndef TF_DISTILL_CUSTOM_OPS_OPS_DEVICE_H_
#define TF_DISTILL_CUSTOM_OPS_OPS_DEVICE_H_

#include <cstdint>
#include <functional>
#include <type_traits>

#include "custom_ops/cc/kernels/half.h"
#include "custom_ops/cc/kernels/parallel.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tf_distill {

using CPUDevice = Eigen::ThreadPoolDevice;
#if GOOGLE_CUDA
using GPUDevice = Eigen::GpuDevice;
#endif

// TensorFlow's intra-op thread pool, sharding as Eigen's parallelFor does.
class EigenCpuRunner : public CpuRunner {
 public:
  explicit EigenCpuRunner(const CPUDevice& d) : d_(d) {}
  int NumThreads() const override { return d_.numThreads(); }
  void ParallelFor(int64_t n, const CpuCost& cost, int64_t align,
                   const std::function<void(int64_t, int64_t)>& fn) const override {
    const Eigen::TensorOpCost op_cost(cost.bytes_loaded, cost.bytes_stored, cost.compute_cycles);
    if (align > 1) {
      d_.parallelFor(n, op_cost, [align](Eigen::Index m) { return (m + align - 1) / align * align; }, fn);
    } else {
      d_.parallelFor(n, op_cost, fn);
    }
  }

 private:
  const CPUDevice& d_;
};

// The kernels' element type for a TensorFlow one.
template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<Eigen::half> {
  using type = Half;
};
static_assert(sizeof(Half) == sizeof(Eigen::half), "Half must have the layout of Eigen::half");

template <typename T>
const typename KernelType<T>::type* KernelData(const tensorflow::Tensor& t) {
  return reinterpret_cast<const typename KernelType<T>::type*>(t.flat<T>().data());
}
template <typename T>
typename KernelType<T>::type* KernelData(tensorflow::Tensor* t) {
  return reinterpret_cast<typename KernelType<T>::type*>(t->flat<T>().data());
}

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_OPS_DEVICE_H_
