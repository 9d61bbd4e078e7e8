// How the CPU kernels run on several threads without depending on TensorFlow: the op wrappers
// adapt TensorFlow's Eigen thread pool (custom_ops/cc/ops/device.h), the standalone check
// (custom_ops/check/) runs them on one thread.
#ifndef TF_DISTILL_CUSTOM_OPS_KERNELS_PARALLEL_H_
#define TF_DISTILL_CUSTOM_OPS_KERNELS_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace tf_distill {

// Cost of one item, as Eigen's TensorOpCost counts it: it sizes the shards.
struct CpuCost {
  double bytes_loaded;
  double bytes_stored;
  double compute_cycles;
};

class CpuRunner {
 public:
  virtual ~CpuRunner() = default;
  virtual int NumThreads() const = 0;
  // Calls fn(begin, end) on disjoint shards covering [0, n), possibly concurrently, and returns
  // when all are done. align > 1 rounds the shard sizes up to multiples of align.
  virtual void ParallelFor(int64_t n, const CpuCost& cost, int64_t align,
                           const std::function<void(int64_t, int64_t)>& fn) const = 0;
};

// Everything on the calling thread, as one shard.
class SerialCpuRunner : public CpuRunner {
 public:
  int NumThreads() const override { return 1; }
  void ParallelFor(int64_t n, const CpuCost&, int64_t, const std::function<void(int64_t, int64_t)>& fn) const override {
    fn(0, n);
  }
};

}  // namespace tf_distill

#endif  // TF_DISTILL_CUSTOM_OPS_KERNELS_PARALLEL_H_
