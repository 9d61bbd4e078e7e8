// The Eigen device an op kernel runs on. GPU kernels use only the stream of the Eigen GPU
// device: TF 2.21 wheels are built against CUDA 12.5 and nvcc here is 13.0, whose
// cudaDeviceProp layouts differ, so Eigen's device-property helpers are not trusted.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_DEVICE_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_DEVICE_H_

#include "tensorflow/core/framework/op_kernel.h"

namespace tf_distill {

using CPUDevice = Eigen::ThreadPoolDevice;
#if GOOGLE_CUDA
using GPUDevice = Eigen::GpuDevice;
#endif

template <typename Device>
const Device& GetDevice(tensorflow::OpKernelContext* ctx);

template <>
inline const CPUDevice& GetDevice<CPUDevice>(tensorflow::OpKernelContext* ctx) {
  return ctx->eigen_cpu_device();
}

#if GOOGLE_CUDA
template <>
inline const GPUDevice& GetDevice<GPUDevice>(tensorflow::OpKernelContext* ctx) {
  return ctx->eigen_gpu_device();
}
#endif

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_DEVICE_H_
