// The instruction set the CPU kernels picked, for Python (tf_distill.ops._loader.cpu_isa,
// read with ctypes): benchmarks report it and the tests check that TF_DISTILL_MAX_ISA took hold.
#include "custom_ops/cc/kernels/cpu_isa.h"

extern "C" __attribute__((visibility("default"))) const char* TfDistillCpuIsa() {
  switch (tf_distill::SelectedCpuIsa()) {
    case tf_distill::CpuIsa::kAvx512:
      return "avx512";
    case tf_distill::CpuIsa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}
