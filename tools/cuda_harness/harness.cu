// Standalone check + bandwidth benchmark of the FlattenWithSeqLenMask CUDA
// kernels (the same source the TF op uses: flatten_with_seq_len_mask_gpu.cu.h).
// No TensorFlow needed.  Usage: harness [B T F] ...  (default two shapes).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../../returnn_rc/ops/cc/flatten_with_seq_len_mask.h"
#include "../../returnn_rc/ops/cc/flatten_with_seq_len_mask_gpu.cu.h"

#define CHECK_CUDA(x)                                                                  \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

using returnn_rc::FlattenPlan;

// Plan for padded [outer, dim_a, mid, dim_c, inner] with the given lengths.
static FlattenPlan MakePlan(int64_t B, int64_t T, int64_t F, bool batch_first, bool time_major,
                            const std::vector<int64_t>& lens) {
  FlattenPlan p;
  p.outer = 1;
  p.mid = 1;
  p.inner = F;
  p.batch_is_a = batch_first;
  p.dim_a = batch_first ? B : T;
  p.dim_c = batch_first ? T : B;
  p.time_major = time_major;
  p.lens = lens;
  returnn_rc::ComputeMajorOffsets(&p);
  return p;
}

// CPU reference: packed frames in order, padded index of frame (b, t).
static void Reference(const FlattenPlan& p, const std::vector<float>& padded, std::vector<float>* packed) {
  const int64_t B = p.batch(), T = p.time(), F = p.inner;
  packed->clear();
  auto push = [&](int64_t b, int64_t t) {
    const int64_t a = p.batch_is_a ? b : t, c = p.batch_is_a ? t : b;
    const float* src = &padded[(a * p.dim_c + c) * F];
    packed->insert(packed->end(), src, src + F);
  };
  if (!p.time_major) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < p.lens[b]; ++t) push(b, t);
  } else {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < B; ++b)
        if (t < p.lens[b]) push(b, t);
  }
}

struct DevicePlan {
  int64_t* buf = nullptr;
  returnn_rc::gpu::DeviceLens lens{};
  explicit DevicePlan(const FlattenPlan& p) {
    const size_t n = p.lens.size() + p.major_offsets.size();
    CHECK_CUDA(cudaMalloc(&buf, n * sizeof(int64_t) + 8));
    CHECK_CUDA(cudaMemcpy(buf, p.lens.data(), p.lens.size() * 8, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(buf + p.lens.size(), p.major_offsets.data(), p.major_offsets.size() * 8,
                          cudaMemcpyHostToDevice));
    lens = {buf, buf + p.lens.size()};
  }
  ~DevicePlan() { cudaFree(buf); }
};

static returnn_rc::gpu::Geometry Geom(const FlattenPlan& p) {
  return {p.outer, p.dim_a, p.mid, p.dim_c, p.inner * 4, p.batch_is_a, p.time_major, p.num_frames()};
}

// Checks flatten + unflatten for one layout / order; returns failures.
static int Check(int64_t B, int64_t T, int64_t F, bool batch_first, bool time_major, std::mt19937* rng) {
  std::vector<int64_t> lens(B);
  std::uniform_int_distribution<int64_t> dist(0, T);
  for (auto& l : lens) l = dist(*rng);
  FlattenPlan p = MakePlan(B, T, F, batch_first, time_major, lens);
  std::vector<float> padded(B * T * F);
  for (size_t i = 0; i < padded.size(); ++i) padded[i] = static_cast<float>(i % 100003) + 0.5f;
  std::vector<float> ref;
  Reference(p, padded, &ref);
  float *d_padded, *d_packed, *d_back;
  CHECK_CUDA(cudaMalloc(&d_padded, padded.size() * 4 + 16));
  CHECK_CUDA(cudaMalloc(&d_packed, ref.size() * 4 + 16));
  CHECK_CUDA(cudaMalloc(&d_back, padded.size() * 4 + 16));
  CHECK_CUDA(cudaMemcpy(d_padded, padded.data(), padded.size() * 4, cudaMemcpyHostToDevice));
  DevicePlan dp(p);
  CHECK_CUDA(returnn_rc::gpu::Launch(true, Geom(p), dp.lens, d_padded, d_packed, 0));
  CHECK_CUDA(returnn_rc::gpu::Launch(false, Geom(p), dp.lens, d_packed, d_back, 0));
  std::vector<float> got(ref.size()), back(padded.size());
  CHECK_CUDA(cudaMemcpy(got.data(), d_packed, got.size() * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(back.data(), d_back, back.size() * 4, cudaMemcpyDeviceToHost));
  int bad = got != ref;
  for (int64_t b = 0; b < B && !bad; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t a = batch_first ? b : t, c = batch_first ? t : b;
      const int64_t i = (a * p.dim_c + c) * F;
      for (int64_t f = 0; f < F; ++f)
        if (back[i + f] != (t < lens[b] ? padded[i + f] : 0.f)) bad = 1;
    }
  std::printf("check B=%lld T=%lld F=%lld %s %s: %s\n", (long long)B, (long long)T, (long long)F,
              batch_first ? "[B,T,F]" : "[T,B,F]", time_major ? "time-major" : "batch-major",
              bad ? "FAIL" : "ok");
  cudaFree(d_padded);
  cudaFree(d_packed);
  cudaFree(d_back);
  return bad;
}

// Times flatten of [B,T,F] float32 (lens uniform in [T/2, T]) vs cudaMemcpy D2D.
static void Bench(int64_t B, int64_t T, int64_t F, std::mt19937* rng) {
  std::vector<int64_t> lens(B);
  std::uniform_int_distribution<int64_t> dist(T / 2, T);
  for (auto& l : lens) l = dist(*rng);
  FlattenPlan p = MakePlan(B, T, F, true, false, lens);
  const size_t packed_bytes = p.num_frames() * F * 4;
  float *d_padded, *d_packed, *d_copy;
  CHECK_CUDA(cudaMalloc(&d_padded, B * T * F * 4));
  CHECK_CUDA(cudaMalloc(&d_packed, packed_bytes));
  CHECK_CUDA(cudaMalloc(&d_copy, packed_bytes));
  CHECK_CUDA(cudaMemset(d_padded, 1, B * T * F * 4));
  DevicePlan dp(p);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int iters = 50;
  float ms_op = 0, ms_copy = 0;
  for (int rep = 0; rep < 2; ++rep) {  // rep 0 = warm-up
    cudaEventRecord(e0);
    for (int i = 0; i < iters; ++i) CHECK_CUDA(returnn_rc::gpu::Launch(true, Geom(p), dp.lens, d_padded, d_packed, 0));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    cudaEventElapsedTime(&ms_op, e0, e1);
    cudaEventRecord(e0);
    for (int i = 0; i < iters; ++i)
      CHECK_CUDA(cudaMemcpyAsync(d_copy, d_padded, packed_bytes, cudaMemcpyDeviceToDevice, 0));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    cudaEventElapsedTime(&ms_copy, e0, e1);
  }
  const double gb = 2.0 * packed_bytes / 1e9;  // read + write
  const double bw_op = gb / (ms_op / iters / 1e3), bw_copy = gb / (ms_copy / iters / 1e3);
  std::printf("bench [%lld,%lld,%lld] float32: flatten %.3f ms (%.0f GB/s), cudaMemcpy D2D %.3f ms (%.0f GB/s), "
              "ratio %.2f\n", (long long)B, (long long)T, (long long)F, ms_op / iters, bw_op, ms_copy / iters,
              bw_copy, bw_op / bw_copy);
  cudaFree(d_padded);
  cudaFree(d_packed);
  cudaFree(d_copy);
}

int main(int argc, char** argv) {
  std::mt19937 rng(1234);
  int bad = 0;
  for (bool bf : {true, false})
    for (bool tm : {false, true}) {
      bad += Check(7, 13, 5, bf, tm, &rng);   // odd sizes: 4-byte words
      bad += Check(9, 31, 64, bf, tm, &rng);  // 16-byte words
      bad += Check(0, 5, 4, bf, tm, &rng);
      bad += Check(3, 0, 4, bf, tm, &rng);
    }
  std::vector<std::vector<int64_t>> shapes{{32, 1000, 512}, {256, 500, 64}};
  if (argc >= 4) shapes = {{std::atoll(argv[1]), std::atoll(argv[2]), std::atoll(argv[3])}};
  for (auto& s : shapes) Bench(s[0], s[1], s[2], &rng);
  std::printf(bad ? "FAILED (%d)\n" : "all checks passed\n", bad);
  return bad ? 1 : 0;
}
