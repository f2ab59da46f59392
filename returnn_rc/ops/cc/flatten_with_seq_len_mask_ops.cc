// Op definitions and shape functions of FlattenWithSeqLenMask and
// UnflattenWithSeqLenMask (its gradient and inverse).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace returnn_rc {
namespace {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Normalises batch/time axes against `rank`; error message names the values.
Status NormaliseAxes(int rank, int* batch_axis, int* time_axis) {
  for (int* axis : {batch_axis, time_axis}) {
    if (*axis < -rank || *axis >= rank)
      return tensorflow::errors::InvalidArgument(
          axis == batch_axis ? "batch_axis" : "time_axis", " = ", *axis,
          " is out of range for a tensor of rank ", rank);
    if (*axis < 0) *axis += rank;
  }
  if (*batch_axis == *time_axis)
    return tensorflow::errors::InvalidArgument(
        "batch_axis and time_axis must differ, both are ", *batch_axis);
  return Status();
}

// Reads a constant int32/int64 vector input, if available.
bool ConstLens(InferenceContext* c, int input, std::vector<int64_t>* out) {
  const tensorflow::Tensor* t = c->input_tensor(input);
  if (t == nullptr || t->dims() != 1) return false;
  out->clear();
  if (t->dtype() == tensorflow::DT_INT32) {
    auto f = t->flat<int32_t>();
    for (int64_t i = 0; i < f.size(); ++i) out->push_back(f(i));
  } else if (t->dtype() == tensorflow::DT_INT64) {
    auto f = t->flat<int64_t>();
    for (int64_t i = 0; i < f.size(); ++i) out->push_back(f(i));
  } else {
    return false;
  }
  return true;
}

Status FlattenShape(InferenceContext* c) {
  ShapeHandle x = c->input(0), lens;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &lens));
  int batch_axis, time_axis;
  TF_RETURN_IF_ERROR(c->GetAttr("batch_axis", &batch_axis));
  TF_RETURN_IF_ERROR(c->GetAttr("time_axis", &time_axis));
  if (!c->RankKnown(x)) {
    c->set_output(0, c->UnknownShape());
    return Status();
  }
  const int rank = c->Rank(x);
  if (rank < 2)
    return tensorflow::errors::InvalidArgument("x must have rank >= 2, got rank ", rank);
  TF_RETURN_IF_ERROR(NormaliseAxes(rank, &batch_axis, &time_axis));
  DimensionHandle batch;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, batch_axis), c->Dim(lens, 0), &batch));
  DimensionHandle time = c->Dim(x, time_axis);
  DimensionHandle frames = c->UnknownDim();
  std::vector<int64_t> values;
  if ((c->ValueKnown(batch) && c->Value(batch) == 0) ||
      (c->ValueKnown(time) && c->Value(time) == 0)) {
    frames = c->MakeDim(0);
  } else if (c->ValueKnown(time) && ConstLens(c, 1, &values)) {
    int64_t total = 0;
    for (size_t b = 0; b < values.size(); ++b) {
      if (values[b] < 0 || values[b] > c->Value(time))
        return tensorflow::errors::InvalidArgument(
            "seq_lens[", b, "] = ", values[b], " is out of range [0, ", c->Value(time), "]");
      total += values[b];
    }
    frames = c->MakeDim(total);
  }
  std::vector<DimensionHandle> dims{frames};
  for (int i = 0; i < rank; ++i)
    if (i != batch_axis && i != time_axis) dims.push_back(c->Dim(x, i));
  c->set_output(0, c->MakeShape(dims));
  return Status();
}

Status UnflattenShape(InferenceContext* c) {
  ShapeHandle packed = c->input(0), lens, unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &lens));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 0, &unused));
  int batch_axis, time_axis;
  TF_RETURN_IF_ERROR(c->GetAttr("batch_axis", &batch_axis));
  TF_RETURN_IF_ERROR(c->GetAttr("time_axis", &time_axis));
  if (!c->RankKnown(packed)) {
    c->set_output(0, c->UnknownShape());
    return Status();
  }
  const int packed_rank = c->Rank(packed);
  if (packed_rank < 1)
    return tensorflow::errors::InvalidArgument("packed must have rank >= 1, got rank 0");
  const int rank = packed_rank + 1;
  TF_RETURN_IF_ERROR(NormaliseAxes(rank, &batch_axis, &time_axis));
  DimensionHandle time;
  TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(2, &time));
  std::vector<DimensionHandle> dims;
  int next = 1;
  for (int i = 0; i < rank; ++i) {
    if (i == batch_axis) dims.push_back(c->Dim(lens, 0));
    else if (i == time_axis) dims.push_back(time);
    else dims.push_back(c->Dim(packed, next++));
  }
  c->set_output(0, c->MakeShape(dims));
  return Status();
}

}  // namespace

REGISTER_OP("FlattenWithSeqLenMask")
    .Input("x: T")
    .Input("seq_lens: Tlen")
    .Output("packed: T")
    .Attr("T: {half, bfloat16, float, double, int32, int64}")
    .Attr("Tlen: {int32, int64}")
    .Attr("batch_axis: int = 0")
    .Attr("time_axis: int = 1")
    .Attr("time_major: bool = false")
    .SetShapeFn(FlattenShape)
    .Doc(R"doc(
Removes the padded frames of x.
x: padded tensor, batch at batch_axis, time at time_axis, e.g. [B,T,F].
seq_lens: [B], each in [0, T].
packed: [sum(seq_lens), rest...]; frames ordered (b, t), or (t, b) if time_major.
)doc");

REGISTER_OP("UnflattenWithSeqLenMask")
    .Input("packed: T")
    .Input("seq_lens: Tlen")
    .Input("max_time: Tlen")
    .Output("padded: T")
    .Attr("T: {half, bfloat16, float, double, int32, int64}")
    .Attr("Tlen: {int32, int64}")
    .Attr("batch_axis: int = 0")
    .Attr("time_axis: int = 1")
    .Attr("time_major: bool = false")
    .SetShapeFn(UnflattenShape)
    .Doc(R"doc(
Inverse of FlattenWithSeqLenMask (and its gradient): scatters packed frames
[N, rest...] back to the padded layout (e.g. [B,T,F]) with zeros in padding.
)doc");

}  // namespace returnn_rc
