// Functor contract shared by the CPU kernel (flatten_with_seq_len_mask_kernels.cc)
// and the GPU kernel (flatten_with_seq_len_mask.cu.cc).
//
// Geometry: the padded tensor x (or the unflattened output) of any rank >= 2 is
// viewed as the 5-d array [outer, dim_a, mid, dim_c, inner], where a < c are the
// batch and time axes (in either role).  The packed tensor is
// [num_frames, outer * mid * inner].  A frame (b, t) is valid iff
// t < seq_lens[b].  Frames are packed in batch-major order (b, then t) or, when
// time_major is set, in time-major order (t, then b).
#ifndef RETURNN_RC_OPS_FLATTEN_WITH_SEQ_LEN_MASK_H_
#define RETURNN_RC_OPS_FLATTEN_WITH_SEQ_LEN_MASK_H_

#include <cstdint>
#include <vector>

#if GOOGLE_CUDA
namespace Eigen {
struct GpuDevice;
}  // namespace Eigen
#endif

namespace returnn_rc {

struct FlattenPlan {
  int64_t outer = 1, dim_a = 0, mid = 1, dim_c = 0, inner = 1;
  bool batch_is_a = true;  // batch axis is the smaller axis a
  bool time_major = false; // packed order: t then b
  // Validated lengths, one per batch entry, each in [0, time dim].
  std::vector<int64_t> lens;
  // Packed frame offset of each major index (b for batch-major order, t for
  // time-major order); size num_major + 1, last entry = num_frames.
  std::vector<int64_t> major_offsets;

  int64_t batch() const { return batch_is_a ? dim_a : dim_c; }
  int64_t time() const { return batch_is_a ? dim_c : dim_a; }
  int64_t frame_size() const { return outer * mid * inner; }
  int64_t num_frames() const { return major_offsets.empty() ? 0 : major_offsets.back(); }
  // Element strides of the padded tensor.
  int64_t stride_outer() const { return dim_a * mid * dim_c * inner; }
  int64_t stride_a() const { return mid * dim_c * inner; }
  int64_t stride_mid() const { return dim_c * inner; }
  int64_t stride_c() const { return inner; }
  int64_t stride_batch() const { return batch_is_a ? stride_a() : stride_c(); }
  int64_t stride_time() const { return batch_is_a ? stride_c() : stride_a(); }
};

// Fills major_offsets from lens (host side, O(B + T)).
inline void ComputeMajorOffsets(FlattenPlan* p) {
  const int64_t B = p->batch(), T = p->time();
  if (!p->time_major) {
    p->major_offsets.assign(B + 1, 0);
    for (int64_t b = 0; b < B; ++b) p->major_offsets[b + 1] = p->major_offsets[b] + p->lens[b];
  } else {
    // count of sequences with len > t = B - #{len <= t}
    std::vector<int64_t> hist(T + 1, 0);
    for (int64_t b = 0; b < B; ++b) ++hist[p->lens[b]];
    p->major_offsets.assign(T + 1, 0);
    int64_t ended = 0;
    for (int64_t t = 0; t < T; ++t) {
      ended += hist[t];
      p->major_offsets[t + 1] = p->major_offsets[t] + (B - ended);
    }
  }
}

namespace functor {

// Tlen is the dtype of the op's seq_lens input; the kernel validates the
// lengths and passes them as int64 in plan.lens.
//
// packed[n, :] = x[frame n]  (x padded, packed [num_frames, frame_size]).
template <typename Device, typename T, typename Tlen>
struct FlattenFunctor {
  void operator()(const Device& d, const FlattenPlan& plan, const T* x, T* packed);
};

// out[frame n] = packed[n, :], zeros in all invalid frames.
template <typename Device, typename T, typename Tlen>
struct UnflattenFunctor {
  void operator()(const Device& d, const FlattenPlan& plan, const T* packed, T* out);
};

#if GOOGLE_CUDA
// GPU specialisations, defined in flatten_with_seq_len_mask.cu.cc.
template <typename T, typename Tlen>
struct FlattenFunctor<Eigen::GpuDevice, T, Tlen> {
  void operator()(const Eigen::GpuDevice& d, const FlattenPlan& plan, const T* x, T* packed);
};
template <typename T, typename Tlen>
struct UnflattenFunctor<Eigen::GpuDevice, T, Tlen> {
  void operator()(const Eigen::GpuDevice& d, const FlattenPlan& plan, const T* packed, T* out);
};
#endif  // GOOGLE_CUDA

}  // namespace functor
}  // namespace returnn_rc

#endif  // RETURNN_RC_OPS_FLATTEN_WITH_SEQ_LEN_MASK_H_
