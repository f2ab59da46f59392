// XLA (tf2xla) kernels of FlattenWithSeqLenMask / UnflattenWithSeqLenMask.
// Built into the optional library _flatten_xla.so (links libtensorflow_cc).
//
// Lowering: the padded tensor is transposed to [major, minor, rest...] and seen
// as R = major * minor rows.  Flatten: for each packed position n < R the source
// row is found by an unrolled branch-free binary search over the prefix sums of
// the lengths (batch-major: O(R log B); time-major: over per-time counts, then
// within the time step, O(R (log T + log B))); the output is a row GATHER into a
// statically bounded [R, rest...] buffer whose first dim is marked dynamic with
// xla::SetDimensionSize(N).  Unflatten: each padded row gets its packed position
// (prefix sums via small dots) and gathers it, padding rows select zeros.
// Lengths are clamped to [0, T]: XLA has no run-time errors.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/kernel_def_builder.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "xla/hlo/builder/xla_builder.h"
#include "xla/ffi/api/ffi.h"
#include "xla/shape_util.h"
#include "xla/xla_data.pb.h"

namespace returnn_rc {
namespace {

using ::tensorflow::XlaOpKernel;
using ::tensorflow::XlaOpKernelContext;
namespace errors = ::tensorflow::errors;

const ::tensorflow::DataType kTypes[] = {::tensorflow::DT_HALF, ::tensorflow::DT_BFLOAT16,
                                         ::tensorflow::DT_FLOAT, ::tensorflow::DT_DOUBLE,
                                         ::tensorflow::DT_INT32, ::tensorflow::DT_INT64};
const ::tensorflow::DataType kLenTypes[] = {::tensorflow::DT_INT32, ::tensorflow::DT_INT64};

xla::XlaComputation ScalarComputation(xla::XlaBuilder* b, const char* name, xla::PrimitiveType type,
                                      bool add) {
  auto sub = b->CreateSubBuilder(name);
  const xla::Shape s = xla::ShapeUtil::MakeShape(type, {});
  auto x = xla::Parameter(sub.get(), 0, s, "x");
  auto y = xla::Parameter(sub.get(), 1, s, "y");
  // add: x + y; otherwise assignment (the scatter update y wins).
  return sub->Build(add ? xla::Add(x, y) : y).value();
}

// Row geometry of the padded tensor in packed order.
struct Rows {
  std::vector<int64_t> perm;       // padded axes -> [major, minor, rest...]
  std::vector<int64_t> rest_dims;  // dims of rest
  int64_t major = 0, minor = 0;
  xla::XlaOp valid;  // [R] pred
  xla::XlaOp dest;   // [R] s64 packed position, R + row for invalid rows
  xla::XlaOp count;  // s32 scalar, number of valid rows
  xla::XlaOp lens;   // [B] s64, clamped to [0, T]
  xla::XlaOp src;    // [R] s64, only with want_src: padded row of packed position n (0 for n >= count)
};

// table[idx] for a 1-D table and idx [R] (s64).
xla::XlaOp GatherScalars(xla::XlaOp table, xla::XlaOp idx, int64_t R) {
  xla::GatherDimensionNumbers dn;
  dn.add_collapsed_slice_dims(0);
  dn.add_start_index_map(0);
  dn.set_index_vector_dim(1);
  return xla::Gather(table, xla::Reshape(idx, {R, 1}), dn, {1});
}

// rows[idx[i]] for rows [R', F] and idx [R, 1]: [R, F].
xla::XlaOp GatherRows(xla::XlaOp rows, xla::XlaOp idx, int64_t F) {
  xla::GatherDimensionNumbers dn;
  dn.add_offset_dims(1);
  dn.add_collapsed_slice_dims(0);
  dn.add_start_index_map(0);
  dn.set_index_vector_dim(1);
  return xla::Gather(rows, idx, dn, {1, F});
}

int64_t NextPow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Branch-free binary search, unrolled (log2(P) + 1 gathers of R scalars): for each query q[i],
// the number of entries <= q[i] in one ascending row of `table` (flat; the row starts at base[i],
// or at 0 if base is invalid).  Rows have length 2*P (P = NextPow2(entries)), padded with kHuge.
constexpr int64_t kHuge = int64_t{1} << 62;
xla::XlaOp CountLE(xla::XlaBuilder* b, xla::XlaOp table, xla::XlaOp base, xla::XlaOp q, int64_t P, int64_t R) {
  auto lo = xla::Broadcast(xla::ConstantR0<int64_t>(b, 0), {R});
  for (int64_t step = P; step >= 1; step >>= 1) {
    auto cand = xla::Add(lo, xla::ConstantR0<int64_t>(b, step));
    auto idx = xla::Sub(cand, xla::ConstantR0<int64_t>(b, 1));
    if (base.valid()) idx = xla::Add(idx, base);
    lo = xla::Select(xla::Le(GatherScalars(table, idx, R), q), cand, lo);
  }
  return lo;
}

// Pads the last dim of `v` (size n) with kHuge to 2 * NextPow2(n).
xla::XlaOp PadHuge(xla::XlaBuilder* b, xla::XlaOp v, int rank, int64_t n) {
  xla::PaddingConfig pc;
  for (int i = 0; i < rank; ++i) {
    auto* d = pc.add_dimensions();
    d->set_edge_padding_low(0);
    d->set_edge_padding_high(i == rank - 1 ? 2 * NextPow2(n) - n : 0);
    d->set_interior_padding(0);
  }
  return xla::Pad(v, xla::ConstantR0<int64_t>(b, kHuge), pc);
}

absl::Status NormAxes(int rank, int64_t* ba, int64_t* ta) {
  for (int64_t* a : {ba, ta}) {
    if (*a < -rank || *a >= rank)
      return errors::InvalidArgument("axis ", *a, " out of range for rank ", rank);
    if (*a < 0) *a += rank;
  }
  if (*ba == *ta) return errors::InvalidArgument("batch_axis and time_axis must differ, both are ", *ba);
  return absl::OkStatus();
}

absl::Status MakeRows(xla::XlaBuilder* b, const std::vector<int64_t>& padded_dims, int64_t ba, int64_t ta,
                      bool time_major, xla::XlaOp seq_lens, Rows* r, bool want_src = false) {
  const int rank = padded_dims.size();
  const int64_t B = padded_dims[ba], T = padded_dims[ta];
  const int64_t major_axis = time_major ? ta : ba, minor_axis = time_major ? ba : ta;
  r->perm = {major_axis, minor_axis};
  for (int i = 0; i < rank; ++i)
    if (i != ba && i != ta) {
      r->perm.push_back(i);
      r->rest_dims.push_back(padded_dims[i]);
    }
  r->major = padded_dims[major_axis];
  r->minor = padded_dims[minor_axis];
  const int64_t R = B * T;
  using xla::S64;
  auto lens = xla::Clamp(xla::ConstantR0<int64_t>(b, 0), xla::ConvertElementType(seq_lens, S64),
                         xla::ConstantR0<int64_t>(b, T));
  auto add_s64 = ScalarComputation(b, "add_s64", S64, true);
  r->lens = lens;
  r->count = xla::ConvertElementType(xla::Reduce(lens, xla::ConstantR0<int64_t>(b, 0), add_s64, {0}), xla::S32);
  const std::vector<int64_t> grid{r->major, r->minor};
  auto row = xla::Iota(b, xla::ShapeUtil::MakeShape(S64, grid), 0);
  auto col = xla::Iota(b, xla::ShapeUtil::MakeShape(S64, grid), 1);
  xla::XlaOp valid, dest;
  if (!time_major) {
    // grid [B, T]: valid iff t < len_b; dest = start_b + t.
    auto lens_bt = xla::BroadcastInDim(lens, grid, {0});
    valid = xla::Lt(col, lens_bt);
    auto bi = xla::Iota(b, xla::ShapeUtil::MakeShape(S64, {B, B}), 0);
    auto bj = xla::Iota(b, xla::ShapeUtil::MakeShape(S64, {B, B}), 1);
    auto lower = xla::ConvertElementType(xla::Lt(bj, bi), xla::F64);  // [b, b'] = b' < b
    auto start = xla::ConvertElementType(xla::Dot(lower, xla::ConvertElementType(lens, xla::F64)), S64);
    dest = xla::Add(xla::BroadcastInDim(start, grid, {0}), col);
    if (want_src && R > 0) {
      // b(n) = #{b : end_b <= n}, t(n) = n - start_b(n).
      auto n = xla::Iota(b, S64, R);
      auto ends = xla::Add(start, lens);
      auto bn = xla::Clamp(xla::ConstantR0<int64_t>(b, 0),
                           CountLE(b, PadHuge(b, ends, 1, B), xla::XlaOp(), n, NextPow2(B), R),
                           xla::ConstantR0<int64_t>(b, B - 1));
      auto tn = xla::Sub(n, GatherScalars(start, bn, R));
      auto src = xla::Add(xla::Mul(bn, xla::ConstantR0<int64_t>(b, T)), tn);
      auto cnt = xla::ConvertElementType(r->count, S64);
      r->src = xla::Select(xla::Lt(n, cnt), src, xla::Broadcast(xla::ConstantR0<int64_t>(b, 0), {R}));
    }
  } else {
    // grid [T, B]: valid iff t < len_b; dest = sum_b' min(len_b', t) + #{b' < b valid at t}.
    auto lens_tb = xla::BroadcastInDim(lens, grid, {1});
    valid = xla::Lt(row, lens_tb);
    auto before = xla::Reduce(xla::Min(lens_tb, row), xla::ConstantR0<int64_t>(b, 0), add_s64, {1});
    auto bi = xla::Iota(b, xla::ShapeUtil::MakeShape(S64, {B, B}), 0);
    auto bj = xla::Iota(b, xla::ShapeUtil::MakeShape(S64, {B, B}), 1);
    auto upper = xla::ConvertElementType(xla::Lt(bi, bj), xla::F64);  // [b', b] = b' < b
    auto rank_in_t = xla::ConvertElementType(xla::Dot(xla::ConvertElementType(valid, xla::F64), upper), S64);
    dest = xla::Add(xla::BroadcastInDim(before, grid, {0}), rank_in_t);
    if (want_src && R > 0) {
      // t(n) = #{t : end_t <= n} with end_t = sum_b min(len_b, t + 1); k = n - before_t(n);
      // b(n) = #{b : incl[t(n), b] <= k}, incl[t, b] = #{b' <= b valid at t} (ascending in b).
      auto n = xla::Iota(b, S64, R);
      auto valid_s = xla::ConvertElementType(valid, S64);
      auto ends = xla::Add(before, xla::Reduce(valid_s, xla::ConstantR0<int64_t>(b, 0), add_s64, {1}));
      auto tn = xla::Clamp(xla::ConstantR0<int64_t>(b, 0),
                           CountLE(b, PadHuge(b, ends, 1, T), xla::XlaOp(), n, NextPow2(T), R),
                           xla::ConstantR0<int64_t>(b, T - 1));
      auto k = xla::Sub(n, GatherScalars(before, tn, R));
      auto incl = xla::Add(rank_in_t, valid_s);
      const int64_t W = 2 * NextPow2(B);
      auto table = xla::Reshape(PadHuge(b, incl, 2, B), {T * W});
      auto bn = xla::Clamp(xla::ConstantR0<int64_t>(b, 0),
                           CountLE(b, table, xla::Mul(tn, xla::ConstantR0<int64_t>(b, W)), k, NextPow2(B), R),
                           xla::ConstantR0<int64_t>(b, B - 1));
      auto src = xla::Add(xla::Mul(tn, xla::ConstantR0<int64_t>(b, B)), bn);
      auto cnt = xla::ConvertElementType(r->count, S64);
      r->src = xla::Select(xla::Lt(n, cnt), src, xla::Broadcast(xla::ConstantR0<int64_t>(b, 0), {R}));
    }
  }
  r->valid = xla::Reshape(valid, {R});
  auto oob = xla::Add(xla::Iota(b, S64, R), xla::ConstantR0<int64_t>(b, R));
  r->dest = xla::Select(r->valid, xla::Reshape(dest, {R}), oob);
  return absl::OkStatus();
}

// --- XLA:CPU forward as a host custom call --------------------------------
// XLA:CPU emits the row gather element by element (~3x slower than memcpy
// here), so on XLA_CPU_JIT the batch-major forward is a custom call that does
// one memcpy per sequence (like the native kernel).  Operands: rows [B*T, F]
// (row-major), lens [B] s64 (clamped in XLA); result [B*T, F], rows >= N are
// left unwritten (they are hidden by the dynamic dimension size).
// Typed FFI handler (XLA:CPU supports no legacy custom-call API any more), attributes T, row_bytes.
// RETURNN_RC_XLA_HOST_CALL=0 selects the gather.
constexpr char kHostCallTarget[] = "returnn_rc_flatten_with_seq_len_mask_host";

// Copies the valid rows of rows [B*T, row_bytes] (sequence b = rows [b*T, b*T + lens[b])) to out.
void FlattenHostCopy(const char* x, const int64_t* lens, int64_t B, int64_t T, int64_t row_bytes, char* dst) {
  std::vector<int64_t> start(B + 1, 0);
  for (int64_t b = 0; b < B; ++b) start[b + 1] = start[b] + std::min<int64_t>(std::max<int64_t>(lens[b], 0), T);
  const int64_t total = start[B] * row_bytes;
  // Byte range [lo, hi) of the packed output, copied sequence piece by piece.
  auto copy_range = [&](int64_t lo, int64_t hi) {
    int64_t b = std::upper_bound(start.begin(), start.end(), lo / row_bytes) - start.begin() - 1;
    for (int64_t pos = lo; pos < hi && b < B; ++b) {
      const int64_t seq_lo = start[b] * row_bytes, seq_hi = start[b + 1] * row_bytes;
      const int64_t e = std::min(hi, seq_hi);
      if (e > pos) std::memcpy(dst + pos, x + b * T * row_bytes + (pos - seq_lo), e - pos);
      pos = std::max(pos, e);
    }
  };
  // Two halves on two threads for large copies (memory bound; XLA:CPU runs this call on one thread).
  if (total >= (int64_t{8} << 20) && std::thread::hardware_concurrency() >= 2) {
    const int64_t mid = total / 2;
    std::thread t([&] { copy_range(mid, total); });
    copy_range(0, mid);
    t.join();
  } else if (total > 0) {
    copy_range(0, total);
  }
}

namespace ffi = ::xla::ffi;

ffi::Error FlattenHostImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::S64> lens, ffi::Result<ffi::AnyBuffer> out,
                           int64_t T, int64_t row_bytes) {
  const int64_t B = static_cast<int64_t>(lens.element_count());
  if (T < 0 || row_bytes <= 0 || static_cast<int64_t>(x.size_bytes()) != B * T * row_bytes ||
      out->size_bytes() != x.size_bytes())
    return ffi::Error::InvalidArgument("FlattenWithSeqLenMask host call: inconsistent shapes");
  FlattenHostCopy(static_cast<const char*>(x.untyped_data()), lens.typed_data(), B, T, row_bytes,
                  static_cast<char*>(out->untyped_data()));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(kFlattenHostHandler, FlattenHostImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S64>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("T")
                                  .Attr<int64_t>("row_bytes"));

}  // namespace
}  // namespace returnn_rc

namespace xla::ffi {
const XLA_FFI_Api* GetXlaFfiApi();  // exported by libtensorflow_cc (xla/ffi/ffi_api.h)
}  // namespace xla::ffi

XLA_FFI_REGISTER_HANDLER(::xla::ffi::GetXlaFfiApi(), "returnn_rc_flatten_with_seq_len_mask_host", "Host",
                         ::returnn_rc::kFlattenHostHandler);

namespace returnn_rc {
namespace {

bool UseHostCall() {
  const char* v = std::getenv("RETURNN_RC_XLA_HOST_CALL");
  return !(v && std::string(v) == "0");
}

class FlattenXlaOp : public XlaOpKernel {
 public:
  explicit FlattenXlaOp(::tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    on_cpu_ = ctx->device_type().type_string() == ::tensorflow::DEVICE_CPU_XLA_JIT;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("batch_axis", &batch_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_axis", &time_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_major", &time_major_));
  }

  void Compile(XlaOpKernelContext* ctx) override {
    xla::XlaBuilder* b = ctx->builder();
    auto x_shape_or = ctx->InputXlaShape(0);
    OP_REQUIRES_OK(ctx, x_shape_or.status());
    const xla::Shape& xs = x_shape_or.value();
    const int rank = xs.dimensions().size();
    OP_REQUIRES(ctx, rank >= 2, errors::InvalidArgument("x must have rank >= 2, got ", rank));
    int64_t ba = batch_axis_, ta = time_axis_;
    OP_REQUIRES_OK(ctx, NormAxes(rank, &ba, &ta));
    std::vector<int64_t> dims(xs.dimensions().begin(), xs.dimensions().end());
    Rows r;
    OP_REQUIRES_OK(ctx, MakeRows(b, dims, ba, ta, time_major_, ctx->Input(1), &r, /*want_src=*/true));
    const xla::PrimitiveType type = xs.element_type();
    const int64_t R = r.major * r.minor;
    int64_t F = 1;
    for (int64_t d : r.rest_dims) F *= d;
    std::vector<int64_t> out_dims{R};
    out_dims.insert(out_dims.end(), r.rest_dims.begin(), r.rest_dims.end());
    auto zero = xla::ConvertElementType(xla::ConstantR0<int32_t>(b, 0), type);
    xla::XlaOp out;
    if (R == 0 || F == 0) {
      out = xla::Broadcast(zero, out_dims);
    } else {
      // Row gather: packed row n <- padded row src[n] (index math is O(R log B + B^2) / O(R log T + T B^2)).
      auto rows = xla::Reshape(xla::Transpose(ctx->Input(0), r.perm), {R, F});
      if (!time_major_ && !xs.is_dynamic() && UseHostCall() &&
          on_cpu_) {
        const xla::Shape rows_shape = xla::ShapeUtil::MakeShapeWithDescendingLayout(type, {R, F});
        const xla::Shape lens_shape = xla::ShapeUtil::MakeShapeWithDescendingLayout(xla::S64, {r.major});
        // Typed-FFI attributes (MLIR dictionary syntax in the backend config).
        const std::string opaque = "{T = " + std::to_string(r.minor) + " : i64, row_bytes = " +
                                   std::to_string(F * xla::ShapeUtil::ByteSizeOfPrimitiveType(type)) + " : i64}";
        out = xla::CustomCallWithLayout(b, kHostCallTarget, {rows, r.lens}, rows_shape, {rows_shape, lens_shape},
                                        opaque, /*has_side_effect=*/false, {}, nullptr,
                                        xla::CustomCallSchedule::SCHEDULE_NONE,
                                        xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
        out = xla::Reshape(out, out_dims);
      } else {
        out = xla::Reshape(GatherRows(rows, xla::Reshape(r.src, {R, 1}), F), out_dims);
      }
    }
    ctx->SetOutput(0, xla::SetDimensionSize(out, r.count, 0));
  }

 private:
  int batch_axis_, time_axis_;
  bool time_major_;
  bool on_cpu_ = false;
};

class UnflattenXlaOp : public XlaOpKernel {
 public:
  explicit UnflattenXlaOp(::tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("batch_axis", &batch_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_axis", &time_axis_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_major", &time_major_));
  }

  void Compile(XlaOpKernelContext* ctx) override {
    xla::XlaBuilder* b = ctx->builder();
    auto p_shape_or = ctx->InputXlaShape(0);
    OP_REQUIRES_OK(ctx, p_shape_or.status());
    const xla::Shape& ps = p_shape_or.value();
    auto l_shape_or = ctx->InputXlaShape(1);
    OP_REQUIRES_OK(ctx, l_shape_or.status());
    OP_REQUIRES(ctx, l_shape_or.value().dimensions().size() == 1,
                errors::InvalidArgument("seq_lens must have rank 1"));
    int64_t max_time = 0;
    OP_REQUIRES_OK(ctx, ctx->ConstantInputAsIntScalar(2, &max_time));
    OP_REQUIRES(ctx, max_time >= 0, errors::InvalidArgument("max_time = ", max_time, " must be >= 0"));
    const int prank = ps.dimensions().size();
    OP_REQUIRES(ctx, prank >= 1, errors::InvalidArgument("packed must have rank >= 1"));
    const int rank = prank + 1;
    int64_t ba = batch_axis_, ta = time_axis_;
    OP_REQUIRES_OK(ctx, NormAxes(rank, &ba, &ta));
    std::vector<int64_t> dims;
    for (int i = 0, next = 1; i < rank; ++i) {
      if (i == ba) dims.push_back(l_shape_or.value().dimensions(0));
      else if (i == ta) dims.push_back(max_time);
      else dims.push_back(ps.dimensions(next++));
    }
    Rows r;
    OP_REQUIRES_OK(ctx, MakeRows(b, dims, ba, ta, time_major_, ctx->Input(1), &r));
    const xla::PrimitiveType type = ps.element_type();
    const int64_t R = r.major * r.minor, N = ps.dimensions(0);
    std::vector<int64_t> rows_dims{R};
    rows_dims.insert(rows_dims.end(), r.rest_dims.begin(), r.rest_dims.end());
    auto zeros = xla::Broadcast(xla::ConvertElementType(xla::ConstantR0<int32_t>(b, 0), type), rows_dims);
    xla::XlaOp rows = zeros;
    if (R > 0 && N > 0) {
      auto src = xla::Select(r.valid, xla::Clamp(xla::ConstantR0<int64_t>(b, 0), r.dest,
                                                 xla::ConstantR0<int64_t>(b, N - 1)),
                             xla::ConstantR0<int64_t>(b, 0));
      xla::GatherDimensionNumbers dn;
      std::vector<int64_t> slice{1};
      for (int i = 1; i < prank; ++i) {
        dn.add_offset_dims(i);
        slice.push_back(ps.dimensions(i));
      }
      dn.add_collapsed_slice_dims(0);
      dn.add_start_index_map(0);
      dn.set_index_vector_dim(1);
      auto gathered = xla::Gather(ctx->Input(0), xla::Reshape(src, {R, 1}), dn, slice);
      std::vector<int64_t> bdims{0};
      rows = xla::Select(xla::BroadcastInDim(r.valid, rows_dims, bdims), gathered, zeros);
    }
    std::vector<int64_t> grid_dims{r.major, r.minor};
    grid_dims.insert(grid_dims.end(), r.rest_dims.begin(), r.rest_dims.end());
    std::vector<int64_t> inverse(rank);
    for (int i = 0; i < rank; ++i) inverse[r.perm[i]] = i;
    ctx->SetOutput(0, xla::Transpose(xla::Reshape(rows, grid_dims), inverse));
  }

 private:
  int batch_axis_, time_axis_;
  bool time_major_;
};

REGISTER_XLA_OP(Name("FlattenWithSeqLenMask").TypeConstraint("T", kTypes).TypeConstraint("Tlen", kLenTypes),
                FlattenXlaOp);
REGISTER_XLA_OP(Name("UnflattenWithSeqLenMask")
                    .TypeConstraint("T", kTypes)
                    .TypeConstraint("Tlen", kLenTypes)
                    .CompileTimeConstantInput("max_time"),
                UnflattenXlaOp);

// --- Late registration -----------------------------------------------------
// XlaOpRegistry turns its op registrations into JIT kernels once
// (RegisterCompilationKernels); registrations added after that are ignored.
// If this library is loaded after TF already did that (any op ran / anything
// was compiled), register the JIT kernels ourselves.
template <class Op>
::tensorflow::OpKernel* Create(::tensorflow::OpKernelConstruction* c) { return new Op(c); }

bool HasJitKernel(const std::string& backend, const std::string& op) {
  for (const ::tensorflow::KernelDef* k : ::tensorflow::XlaOpRegistry::DeviceKernels(backend, true))
    if (k->op() == op) return true;
  return false;
}

void RegisterLate(const std::string& backend, const char* op, ::tensorflow::OpKernel* (*factory)(
                                                                  ::tensorflow::OpKernelConstruction*)) {
  ::tensorflow::KernelDefBuilder kdb(op);
  kdb.Device(backend.c_str());
  kdb.TypeConstraint("T", std::vector<::tensorflow::DataType>(std::begin(kTypes), std::end(kTypes)));
  kdb.TypeConstraint("Tlen", std::vector<::tensorflow::DataType>(std::begin(kLenTypes), std::end(kLenTypes)));
  // Intentionally leaked: kernel registrations live for the process lifetime.
  new ::tensorflow::kernel_factory::OpKernelRegistrar(kdb.Build(), "XlaJitOp", factory);
}

int late_registered = 0;

const bool kLateRegistration = [] {
  for (const std::string& backend : ::tensorflow::XlaOpRegistry::BackendNames()) {
    // DeviceKernels() runs RegisterCompilationKernels() if it did not run yet,
    // which then picks up the REGISTER_XLA_OP above.
    if (!HasJitKernel(backend, "FlattenWithSeqLenMask")) {
      RegisterLate(backend, "FlattenWithSeqLenMask", &Create<FlattenXlaOp>);
      ++late_registered;
    }
    if (!HasJitKernel(backend, "UnflattenWithSeqLenMask")) {
      RegisterLate(backend, "UnflattenWithSeqLenMask", &Create<UnflattenXlaOp>);
      ++late_registered;
    }
  }
  return true;
}();

}  // namespace
}  // namespace returnn_rc

// For tests/diagnostics (via ctypes): how many JIT kernels were registered late.
extern "C" int returnn_rc_flatten_xla_late_registrations() { return returnn_rc::late_registered; }
