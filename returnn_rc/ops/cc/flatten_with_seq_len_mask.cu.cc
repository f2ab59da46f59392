// GPU specialisation of the flatten functors (see flatten_with_seq_len_mask.h).
// Built only when TensorFlow is built with CUDA and nvcc exists (build.py).
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#include "flatten_with_seq_len_mask.h"
#include "flatten_with_seq_len_mask_gpu.cu.h"
#include "tensorflow/core/framework/types.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace returnn_rc {
namespace functor {
namespace {

using GPUDevice = Eigen::GpuDevice;

// Uploads lens + major_offsets (host vectors of the plan) and launches.
template <typename T>
void RunGpu(const GPUDevice& d, const FlattenPlan& p, bool flatten, const T* src, T* dst) {
  const size_t n_lens = p.lens.size(), n_off = p.major_offsets.size();
  const size_t bytes = (n_lens + n_off) * sizeof(int64_t);
  int64_t* dev = bytes ? static_cast<int64_t*>(d.allocate(bytes)) : nullptr;
  if (n_lens) d.memcpyHostToDevice(dev, p.lens.data(), n_lens * sizeof(int64_t));
  if (n_off) d.memcpyHostToDevice(dev + n_lens, p.major_offsets.data(), n_off * sizeof(int64_t));
  gpu::Geometry g{p.outer, p.dim_a, p.mid, p.dim_c, p.inner * static_cast<int64_t>(sizeof(T)),
                  p.batch_is_a, p.time_major, p.num_frames()};
  gpu::Launch(flatten, g, gpu::DeviceLens{dev, dev + n_lens}, src, dst, d.stream());
  if (dev) d.deallocate(dev);  // stream-ordered release in TF's GPU device
}

}  // namespace

template <typename T, typename Tlen>
void FlattenFunctor<GPUDevice, T, Tlen>::operator()(const GPUDevice& d, const FlattenPlan& plan, const T* x,
                                                    T* packed) {
  RunGpu<T>(d, plan, true, x, packed);
}

template <typename T, typename Tlen>
void UnflattenFunctor<GPUDevice, T, Tlen>::operator()(const GPUDevice& d, const FlattenPlan& plan,
                                                      const T* packed, T* out) {
  RunGpu<T>(d, plan, false, packed, out);
}

#define DEFINE_GPU(T)                                         \
  template struct FlattenFunctor<GPUDevice, T, int32_t>;      \
  template struct FlattenFunctor<GPUDevice, T, int64_t>;      \
  template struct UnflattenFunctor<GPUDevice, T, int32_t>;    \
  template struct UnflattenFunctor<GPUDevice, T, int64_t>;
DEFINE_GPU(Eigen::half)
DEFINE_GPU(Eigen::bfloat16)
DEFINE_GPU(float)
DEFINE_GPU(double)
DEFINE_GPU(int32_t)
DEFINE_GPU(int64_t)

}  // namespace functor
}  // namespace returnn_rc
#endif  // GOOGLE_CUDA
