// XLA (tf2xla) kernels of FlattenWithSeqLenMask / UnflattenWithSeqLenMask.
// Built into the optional library _flatten_xla.so (links libtensorflow_cc).
//
// Lowering: the padded tensor is transposed to [major, minor, rest...] and seen
// as R = major * minor rows.  Each row gets its packed position (prefix sums
// via small dots), invalid rows an out-of-bounds position.  Flatten scatters
// the rows into a statically bounded [R, rest...] buffer whose first dim is
// marked dynamic with xla::SetDimensionSize(N); Unflatten gathers rows back.
// Lengths are clamped to [0, T]: XLA has no run-time errors.
#include <algorithm>
#include <vector>

#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/kernel_def_builder.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "xla/hlo/builder/xla_builder.h"
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
};

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
                      bool time_major, xla::XlaOp seq_lens, Rows* r) {
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
  }
  r->valid = xla::Reshape(valid, {R});
  auto oob = xla::Add(xla::Iota(b, S64, R), xla::ConstantR0<int64_t>(b, R));
  r->dest = xla::Select(r->valid, xla::Reshape(dest, {R}), oob);
  return absl::OkStatus();
}

class FlattenXlaOp : public XlaOpKernel {
 public:
  explicit FlattenXlaOp(::tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
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
    OP_REQUIRES_OK(ctx, MakeRows(b, dims, ba, ta, time_major_, ctx->Input(1), &r));
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
      auto rows = xla::Reshape(xla::Transpose(ctx->Input(0), r.perm), {R, F});
      xla::ScatterDimensionNumbers dn;
      dn.add_update_window_dims(1);
      dn.add_inserted_window_dims(0);
      dn.add_scatter_dims_to_operand_dims(0);
      dn.set_index_vector_dim(1);
      out = xla::Scatter(xla::Broadcast(zero, {R, F}), xla::Reshape(r.dest, {R, 1}), rows,
                         ScalarComputation(b, "assign", type, false), dn,
                         /*indices_are_sorted=*/false, /*unique_indices=*/true);
      out = xla::Reshape(out, out_dims);
    }
    ctx->SetOutput(0, xla::SetDimensionSize(out, r.count, 0));
  }

 private:
  int batch_axis_, time_axis_;
  bool time_major_;
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
