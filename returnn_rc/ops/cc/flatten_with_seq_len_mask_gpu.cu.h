// CUDA kernels of FlattenWithSeqLenMask / UnflattenWithSeqLenMask.
// Depends only on the CUDA runtime: included by the TF GPU functor
// (flatten_with_seq_len_mask.cu.cc) and by tools/cuda_harness.
//
// Geometry as in flatten_with_seq_len_mask.h: padded = [outer, dim_a, mid,
// dim_c, inner], packed = [num_frames, outer * mid * inner].  Copies are
// type-agnostic: elements are moved as words W (16/8/4/2/1 bytes), chosen by
// the launcher from the byte size of `inner` and the pointer alignment.
// One thread block handles one frame at a time (grid-stride over frames);
// thread 0 maps the frame to (b, t) via the device copy of major_offsets.
#ifndef RETURNN_RC_OPS_FLATTEN_WITH_SEQ_LEN_MASK_GPU_CU_H_
#define RETURNN_RC_OPS_FLATTEN_WITH_SEQ_LEN_MASK_GPU_CU_H_

#include <cuda_runtime.h>
#include <stdint.h>

namespace returnn_rc {
namespace gpu {

struct Geometry {
  int64_t outer, dim_a, mid, dim_c, inner_bytes;
  bool batch_is_a, time_major;
  int64_t num_frames;  // packed frames
};

// Device arrays: lens[B] (int64, in [0, T]) and major_offsets[num_major + 1].
struct DeviceLens {
  const int64_t* lens;
  const int64_t* major_offsets;
};

namespace detail {

__device__ inline int64_t UpperBound(const int64_t* a, int64_t n, int64_t v) {
  // first index i in [0, n) with a[i] > v
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t m = (lo + hi) / 2;
    if (a[m] <= v) lo = m + 1;
    else hi = m;
  }
  return lo;
}

// Copies one frame: word offsets of padded frame (b, t) <-> packed frame n.
template <typename W, bool kFlatten>
__device__ inline void MoveFrame(const Geometry& g, int64_t iw, const W* src, W* dst, int64_t b, int64_t t,
                                 int64_t n, bool valid) {
  const int64_t B = g.batch_is_a ? g.dim_a : g.dim_c;
  (void)B;
  const int64_t s_c = iw, s_mid = g.dim_c * iw, s_a = g.mid * s_mid, s_outer = g.dim_a * s_a;
  const int64_t a = g.batch_is_a ? b : t, c = g.batch_is_a ? t : b;
  const int64_t base = a * s_a + c * s_c;
  const int64_t frame_words = g.outer * g.mid * iw;
  for (int64_t q = threadIdx.x; q < frame_words; q += blockDim.x) {
    const int64_t w = q % iw, om = q / iw, m = om % g.mid, o = om / g.mid;
    const int64_t padded_idx = base + o * s_outer + m * s_mid + w;
    if (kFlatten) {
      dst[n * frame_words + q] = src[padded_idx];
    } else {
      dst[padded_idx] = valid ? src[n * frame_words + q] : W();
    }
  }
}

// Packed frame n -> (b, t).
__device__ inline void FrameToBT(const Geometry& g, DeviceLens d, int64_t n, int64_t* b, int64_t* t) {
  const int64_t B = g.batch_is_a ? g.dim_a : g.dim_c, T = g.batch_is_a ? g.dim_c : g.dim_a;
  if (!g.time_major) {
    *b = UpperBound(d.major_offsets, B + 1, n) - 1;
    *t = n - d.major_offsets[*b];
  } else {
    *t = UpperBound(d.major_offsets, T + 1, n) - 1;
    int64_t rank = n - d.major_offsets[*t];
    int64_t bb = 0;
    for (; bb < B; ++bb)
      if (d.lens[bb] > *t && rank-- == 0) break;
    *b = bb;
  }
}

// Padded frame (b, t) -> packed frame n (only if valid).
__device__ inline int64_t BTToFrame(const Geometry& g, DeviceLens d, int64_t b, int64_t t) {
  if (!g.time_major) return d.major_offsets[b] + t;
  int64_t rank = 0;
  for (int64_t bb = 0; bb < b; ++bb) rank += d.lens[bb] > t;
  return d.major_offsets[t] + rank;
}

template <typename W>
__global__ void FlattenKernel(Geometry g, DeviceLens d, int64_t iw, const W* padded, W* packed) {
  __shared__ int64_t bt[2];
  for (int64_t n = blockIdx.x; n < g.num_frames; n += gridDim.x) {
    if (threadIdx.x == 0) FrameToBT(g, d, n, &bt[0], &bt[1]);
    __syncthreads();
    MoveFrame<W, true>(g, iw, padded, packed, bt[0], bt[1], n, true);
    __syncthreads();
  }
}

template <typename W>
__global__ void UnflattenKernel(Geometry g, DeviceLens d, int64_t iw, const W* packed, W* padded) {
  const int64_t B = g.batch_is_a ? g.dim_a : g.dim_c, T = g.batch_is_a ? g.dim_c : g.dim_a;
  for (int64_t f = blockIdx.x; f < B * T; f += gridDim.x) {
    const int64_t b = f / T, t = f % T;
    const bool valid = t < d.lens[b];
    const int64_t n = valid ? BTToFrame(g, d, b, t) : 0;
    MoveFrame<W, false>(g, iw, packed, padded, b, t, n, valid);
  }
}

template <typename W>
cudaError_t LaunchTyped(bool flatten, const Geometry& g, DeviceLens d, const void* src, void* dst,
                        cudaStream_t stream, int max_blocks) {
  const int64_t iw = g.inner_bytes / static_cast<int64_t>(sizeof(W));
  const int64_t frame_words = g.outer * g.mid * iw;
  const int64_t B = g.batch_is_a ? g.dim_a : g.dim_c, T = g.batch_is_a ? g.dim_c : g.dim_a;
  const int64_t frames = flatten ? g.num_frames : B * T;
  if (frames == 0 || frame_words == 0) return cudaSuccess;
  int threads = 32;
  while (threads < 256 && threads < frame_words) threads *= 2;
  const int64_t blocks = frames < max_blocks ? frames : max_blocks;
  if (flatten)
    FlattenKernel<W><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        g, d, iw, static_cast<const W*>(src), static_cast<W*>(dst));
  else
    UnflattenKernel<W><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        g, d, iw, static_cast<const W*>(src), static_cast<W*>(dst));
  return cudaGetLastError();
}

}  // namespace detail

// Launches flatten (padded -> packed) or unflatten (packed -> padded with
// zero padding) on `stream`.  src / dst are device pointers.
inline cudaError_t Launch(bool flatten, const Geometry& g, DeviceLens d, const void* src, void* dst,
                          cudaStream_t stream, int max_blocks = 65535 * 8) {
  const uintptr_t align = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst);
  const int64_t ib = g.inner_bytes;
  if (ib % 16 == 0 && align % 16 == 0) return detail::LaunchTyped<uint4>(flatten, g, d, src, dst, stream, max_blocks);
  if (ib % 8 == 0 && align % 8 == 0) return detail::LaunchTyped<uint2>(flatten, g, d, src, dst, stream, max_blocks);
  if (ib % 4 == 0 && align % 4 == 0) return detail::LaunchTyped<uint32_t>(flatten, g, d, src, dst, stream, max_blocks);
  if (ib % 2 == 0 && align % 2 == 0) return detail::LaunchTyped<uint16_t>(flatten, g, d, src, dst, stream, max_blocks);
  return detail::LaunchTyped<uint8_t>(flatten, g, d, src, dst, stream, max_blocks);
}

}  // namespace gpu
}  // namespace returnn_rc

#endif  // RETURNN_RC_OPS_FLATTEN_WITH_SEQ_LEN_MASK_GPU_CU_H_
