// CPU kernels (and GPU kernel registration) of FlattenWithSeqLenMask /
// UnflattenWithSeqLenMask.  The copy itself lives in the functors of
// flatten_with_seq_len_mask.h; this file validates inputs and plans offsets.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <cstring>

#include "flatten_with_seq_len_mask.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace returnn_rc {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

namespace functor {
namespace {

// Copies n elements; short runs without the memcpy call overhead.
template <typename T>
inline void CopyElems(T* dst, const T* src, int64_t n) {
  if (n * static_cast<int64_t>(sizeof(T)) >= 64) {
    std::memcpy(dst, src, n * sizeof(T));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

template <typename T>
inline void ZeroElems(T* dst, int64_t n) {
  std::memset(static_cast<void*>(dst), 0, n * sizeof(T));
}

// Moves frames between the padded tensor and the packed tensor.
// kFlatten: padded -> packed; otherwise packed -> padded (+ zero padding).
template <typename T, bool kFlatten>
class CpuMover {
 public:
  CpuMover(const FlattenPlan& p, T* padded, T* packed) : p_(p), padded_(padded), packed_(packed) {
    major_is_a_ = p.time_major != p.batch_is_a;  // batch-major order & batch is a, or vice versa
    stride_major_ = p.time_major ? p.stride_time() : p.stride_batch();
    stride_minor_ = p.time_major ? p.stride_batch() : p.stride_time();
    minor_dim_ = p.time_major ? p.batch() : p.time();
    frame_ = p.frame_size();
    // Consecutive minor frames of one major index are one contiguous block.
    contiguous_ = p.outer == 1 && p.mid == 1 && major_is_a_;
  }

  int64_t minor_dim() const { return minor_dim_; }

  // Handles minor indices [k0, k1) of major index j.
  void Run(int64_t j, int64_t k0, int64_t k1) const {
    if (!p_.time_major) {
      // Valid frames of sequence j: minor (time) index < lens[j].
      const int64_t len = p_.lens[j];
      const int64_t v1 = std::min(k1, std::max(k0, len));
      if (v1 > k0) Move(j, k0, v1, p_.major_offsets[j] + k0);
      if (!kFlatten && k1 > v1) Zero(j, v1, k1);
      return;
    }
    // Time-major order: major index j is time, valid iff lens[k] > j.
    int64_t n = p_.major_offsets[j];
    int64_t k = k0;
    while (k < k1) {
      const bool valid = p_.lens[k] > j;
      int64_t e = k + 1;
      while (e < k1 && (p_.lens[e] > j) == valid) ++e;
      if (valid) {
        Move(j, k, e, n);
        n += e - k;
      } else if (!kFlatten) {
        Zero(j, k, e);
      }
      k = e;
    }
  }

 private:
  // Valid frames (j, k0..k1) <-> packed frames n0...
  void Move(int64_t j, int64_t k0, int64_t k1, int64_t n0) const {
    T* packed = packed_ + n0 * frame_;
    T* padded = padded_ + j * stride_major_ + k0 * stride_minor_;
    if (contiguous_) {
      Copy(padded, packed, (k1 - k0) * frame_);
      return;
    }
    for (int64_t k = k0; k < k1; ++k, packed += frame_, padded += stride_minor_) {
      T* dst_row = packed;
      for (int64_t o = 0; o < p_.outer; ++o)
        for (int64_t m = 0; m < p_.mid; ++m, dst_row += p_.inner)
          Copy(padded + o * p_.stride_outer() + m * p_.stride_mid(), dst_row, p_.inner);
    }
  }

  void Copy(T* padded, T* packed, int64_t n) const {
    if (kFlatten) CopyElems(packed, padded, n);
    else CopyElems(padded, packed, n);
  }

  void Zero(int64_t j, int64_t k0, int64_t k1) const {
    T* padded = padded_ + j * stride_major_ + k0 * stride_minor_;
    if (contiguous_) {
      ZeroElems(padded, (k1 - k0) * frame_);
      return;
    }
    for (int64_t k = k0; k < k1; ++k, padded += stride_minor_)
      for (int64_t o = 0; o < p_.outer; ++o)
        for (int64_t m = 0; m < p_.mid; ++m)
          ZeroElems(padded + o * p_.stride_outer() + m * p_.stride_mid(), p_.inner);
  }

  const FlattenPlan& p_;
  T* padded_;
  T* packed_;
  bool major_is_a_, contiguous_;
  int64_t stride_major_, stride_minor_, minor_dim_, frame_;
};

// Runs the mover in parallel on TensorFlow's intra-op CPU thread pool
// (the pool behind the kernel's Eigen::ThreadPoolDevice).  Work units are
// (major index, chunk of minor indices); in time-major order one unit per
// major index, as its packed offsets depend on the whole row.
template <typename T, bool kFlatten>
void RunCpu(const CPUDevice& d, const FlattenPlan& p, T* padded, T* packed) {
  CpuMover<T, kFlatten> mover(p, padded, packed);
  const int64_t num_major = p.time_major ? p.time() : p.batch();
  const int64_t minor = mover.minor_dim();
  if (num_major == 0 || minor == 0 || p.frame_size() == 0) return;
  const int64_t frame_bytes = p.frame_size() * sizeof(T);
  int64_t chunk = minor;
  if (!p.time_major) chunk = std::max<int64_t>(1, std::min(minor, (int64_t{256} << 10) / frame_bytes));
  const int64_t chunks = (minor + chunk - 1) / chunk;
  const double unit_bytes = static_cast<double>(chunk) * frame_bytes;
  d.parallelFor(num_major * chunks, Eigen::TensorOpCost(unit_bytes, unit_bytes, 0),
                [&mover, chunk, chunks, minor](Eigen::Index begin, Eigen::Index end) {
                  for (Eigen::Index u = begin; u < end; ++u) {
                    const int64_t j = u / chunks, c = u % chunks;
                    mover.Run(j, c * chunk, std::min(minor, (c + 1) * chunk));
                  }
                });
}

}  // namespace

template <typename T, typename Tlen>
struct FlattenFunctor<CPUDevice, T, Tlen> {
  void operator()(const CPUDevice& d, const FlattenPlan& plan, const T* x, T* packed) {
    RunCpu<T, true>(d, plan, const_cast<T*>(x), packed);
  }
};

template <typename T, typename Tlen>
struct UnflattenFunctor<CPUDevice, T, Tlen> {
  void operator()(const CPUDevice& d, const FlattenPlan& plan, const T* packed, T* out) {
    RunCpu<T, false>(d, plan, out, const_cast<T*>(packed));
  }
};

}  // namespace functor

namespace {

// Validates axes / lengths against the padded shape and fills the plan.
template <typename Tlen>
Status MakePlan(const TensorShape& padded, int batch_axis, int time_axis, bool time_major,
                const Tensor& seq_lens, FlattenPlan* p) {
  const int rank = padded.dims();
  if (rank < 2) return errors::InvalidArgument("x must have rank >= 2, got shape ", padded.DebugString());
  for (int* axis : {&batch_axis, &time_axis}) {
    if (*axis < -rank || *axis >= rank)
      return errors::InvalidArgument(axis == &batch_axis ? "batch_axis" : "time_axis", " = ", *axis,
                                     " is out of range for a tensor of rank ", rank);
    if (*axis < 0) *axis += rank;
  }
  if (batch_axis == time_axis)
    return errors::InvalidArgument("batch_axis and time_axis must differ, both are ", batch_axis);
  if (seq_lens.dims() != 1)
    return errors::InvalidArgument("seq_lens must have rank 1, got shape ", seq_lens.shape().DebugString());
  const int64_t B = padded.dim_size(batch_axis), T = padded.dim_size(time_axis);
  if (seq_lens.dim_size(0) != B)
    return errors::InvalidArgument("seq_lens has ", seq_lens.dim_size(0),
                                   " entries but the batch dim (axis ", batch_axis, ") of shape ",
                                   padded.DebugString(), " is ", B);
  const int a = std::min(batch_axis, time_axis), c = std::max(batch_axis, time_axis);
  p->outer = p->mid = p->inner = 1;
  for (int i = 0; i < a; ++i) p->outer *= padded.dim_size(i);
  for (int i = a + 1; i < c; ++i) p->mid *= padded.dim_size(i);
  for (int i = c + 1; i < rank; ++i) p->inner *= padded.dim_size(i);
  p->dim_a = padded.dim_size(a);
  p->dim_c = padded.dim_size(c);
  p->batch_is_a = batch_axis == a;
  p->time_major = time_major;
  auto lens = seq_lens.flat<Tlen>();
  p->lens.resize(B);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t v = static_cast<int64_t>(lens(b));
    if (v < 0 || v > T)
      return errors::InvalidArgument("seq_lens[", b, "] = ", v, " is out of range [0, ", T, "]");
    p->lens[b] = v;
  }
  ComputeMajorOffsets(p);
  return Status();
}

template <typename Device, typename T, typename Tlen>
class FlattenOp : public OpKernel {
 public:
  explicit FlattenOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("batch_axis", &batch_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_axis", &time_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_major", &time_major_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    FlattenPlan plan;
    OP_REQUIRES_OK(ctx, MakePlan<Tlen>(x.shape(), batch_axis_, time_axis_, time_major_, ctx->input(1), &plan));
    TensorShape out_shape({plan.num_frames()});
    const int rank = x.dims();
    const int ba = batch_axis_ < 0 ? batch_axis_ + rank : batch_axis_;
    const int ta = time_axis_ < 0 ? time_axis_ + rank : time_axis_;
    for (int i = 0; i < rank; ++i)
      if (i != ba && i != ta) out_shape.AddDim(x.dim_size(i));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &out));
    if (out->NumElements() == 0) return;
    functor::FlattenFunctor<Device, T, Tlen>()(ctx->eigen_device<Device>(), plan, x.flat<T>().data(),
                                               out->flat<T>().data());
  }

 private:
  int batch_axis_, time_axis_;
  bool time_major_;
};

template <typename Device, typename T, typename Tlen>
class UnflattenOp : public OpKernel {
 public:
  explicit UnflattenOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("batch_axis", &batch_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_axis", &time_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_major", &time_major_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& packed = ctx->input(0);
    const Tensor& seq_lens = ctx->input(1);
    const Tensor& max_time_t = ctx->input(2);
    OP_REQUIRES(ctx, packed.dims() >= 1,
                errors::InvalidArgument("packed must have rank >= 1, got a scalar"));
    OP_REQUIRES(ctx, max_time_t.dims() == 0,
                errors::InvalidArgument("max_time must be a scalar, got shape ", max_time_t.shape().DebugString()));
    OP_REQUIRES(ctx, seq_lens.dims() == 1,
                errors::InvalidArgument("seq_lens must have rank 1, got shape ", seq_lens.shape().DebugString()));
    const int64_t max_time = static_cast<int64_t>(max_time_t.scalar<Tlen>()());
    OP_REQUIRES(ctx, max_time >= 0, errors::InvalidArgument("max_time = ", max_time, " must be >= 0"));
    const int rank = packed.dims() + 1;
    int ba = batch_axis_, ta = time_axis_;
    OP_REQUIRES(ctx, ba >= -rank && ba < rank && ta >= -rank && ta < rank,
                errors::InvalidArgument("batch_axis = ", ba, " / time_axis = ", ta,
                                        " out of range for an output of rank ", rank));
    if (ba < 0) ba += rank;
    if (ta < 0) ta += rank;
    OP_REQUIRES(ctx, ba != ta, errors::InvalidArgument("batch_axis and time_axis must differ, both are ", ba));
    TensorShape padded_shape;
    for (int i = 0, next = 1; i < rank; ++i) {
      if (i == ba) padded_shape.AddDim(seq_lens.dim_size(0));
      else if (i == ta) padded_shape.AddDim(max_time);
      else padded_shape.AddDim(packed.dim_size(next++));
    }
    FlattenPlan plan;
    OP_REQUIRES_OK(ctx, MakePlan<Tlen>(padded_shape, ba, ta, time_major_, seq_lens, &plan));
    OP_REQUIRES(ctx, packed.dim_size(0) == plan.num_frames(),
                errors::InvalidArgument("packed has ", packed.dim_size(0),
                                        " frames but sum(seq_lens) = ", plan.num_frames()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, padded_shape, &out));
    if (out->NumElements() == 0) return;
    functor::UnflattenFunctor<Device, T, Tlen>()(ctx->eigen_device<Device>(), plan, packed.flat<T>().data(),
                                                 out->flat<T>().data());
  }

 private:
  int batch_axis_, time_axis_;
  bool time_major_;
};

#define REGISTER_CPU(T, Tlen)                                                                    \
  REGISTER_KERNEL_BUILDER(Name("FlattenWithSeqLenMask")                                          \
                              .Device(::tensorflow::DEVICE_CPU)                                  \
                              .TypeConstraint<T>("T")                                            \
                              .TypeConstraint<Tlen>("Tlen"),                                     \
                          FlattenOp<CPUDevice, T, Tlen>);                                        \
  REGISTER_KERNEL_BUILDER(Name("UnflattenWithSeqLenMask")                                        \
                              .Device(::tensorflow::DEVICE_CPU)                                  \
                              .TypeConstraint<T>("T")                                            \
                              .TypeConstraint<Tlen>("Tlen"),                                     \
                          UnflattenOp<CPUDevice, T, Tlen>);
#define REGISTER_CPU_ALL_LEN(T) REGISTER_CPU(T, int32_t) REGISTER_CPU(T, int64_t)

REGISTER_CPU_ALL_LEN(Eigen::half)
REGISTER_CPU_ALL_LEN(Eigen::bfloat16)
REGISTER_CPU_ALL_LEN(float)
REGISTER_CPU_ALL_LEN(double)
REGISTER_CPU_ALL_LEN(int32_t)
REGISTER_CPU_ALL_LEN(int64_t)

}  // namespace

#if GOOGLE_CUDA
// GPU: lengths stay in host memory (the output size is needed on the host
// anyway); the functor in flatten_with_seq_len_mask.cu.cc uploads the plan.
#define REGISTER_GPU(T, Tlen)                                                                    \
  extern template struct functor::FlattenFunctor<GPUDevice, T, Tlen>;                            \
  extern template struct functor::UnflattenFunctor<GPUDevice, T, Tlen>;                          \
  REGISTER_KERNEL_BUILDER(Name("FlattenWithSeqLenMask")                                          \
                              .Device(::tensorflow::DEVICE_GPU)                                  \
                              .HostMemory("seq_lens")                                            \
                              .TypeConstraint<T>("T")                                            \
                              .TypeConstraint<Tlen>("Tlen"),                                     \
                          FlattenOp<GPUDevice, T, Tlen>);                                        \
  REGISTER_KERNEL_BUILDER(Name("UnflattenWithSeqLenMask")                                        \
                              .Device(::tensorflow::DEVICE_GPU)                                  \
                              .HostMemory("seq_lens")                                            \
                              .HostMemory("max_time")                                            \
                              .TypeConstraint<T>("T")                                            \
                              .TypeConstraint<Tlen>("Tlen"),                                     \
                          UnflattenOp<GPUDevice, T, Tlen>);
#define REGISTER_GPU_ALL_LEN(T) REGISTER_GPU(T, int32_t) REGISTER_GPU(T, int64_t)
REGISTER_GPU_ALL_LEN(Eigen::half)
REGISTER_GPU_ALL_LEN(Eigen::bfloat16)
REGISTER_GPU_ALL_LEN(float)
REGISTER_GPU_ALL_LEN(double)
REGISTER_GPU_ALL_LEN(int32_t)
REGISTER_GPU_ALL_LEN(int64_t)
#endif  // GOOGLE_CUDA

}  // namespace returnn_rc
