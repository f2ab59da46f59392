"""Named-dim tensors: :class:`Dim`, :class:`Tensor`, :class:`TensorDict`.

A :class:`Tensor` is a raw ``tf.Tensor`` whose axes are described by :class:`Dim` objects, so that
batch, time and sequence lengths are known when losses are reduced and outputs exported.

Letters used in shapes: ``B`` batch, ``T`` a dynamic (time) dim, ``F`` a static feature dim.

Dims are compared by identity, as in RETURNN: two ``Dim("time")`` objects are different dims.
"""

from __future__ import annotations

import re
import weakref
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

RawTensor = Union[tf.Tensor, tf.Variable]

_INT_DTYPES = (tf.int32, tf.int64)


def _is_raw_tensor(x: Any) -> bool:
  return isinstance(x, (tf.Tensor, tf.Variable))


class Dim:
  """One axis of a :class:`Tensor`.

  Args:
    dimension: ``int`` for a static dim; ``None`` for a dynamic dim whose per-sequence sizes are
      set later through :attr:`dyn_size_ext` or :attr:`dyn_size`; a raw int ``tf.Tensor`` or a
      :class:`Tensor` of sizes ``[B]`` for a dynamic dim with those sizes.
    name: human-readable name, used in error messages and exports.

  The sizes of a dynamic dim are kept per ``tf.Graph`` (see :attr:`dyn_size_ext`): a dim may live at
  module level (RETURNN config style) and serve several graphs in one process, each with its own sizes.
  """

  def __init__(self, dimension: Union[int, None, RawTensor, "Tensor"], *, name: str):
    if not isinstance(name, str) or not name:
      raise TypeError(f"Dim name must be a non-empty str, got {name!r}")
    self.name = name
    self._is_batch = False
    # Sizes are kept per tf.Graph (in a table on the graph, see _graph_sizes), so one Dim (e.g. at
    # module level in a graph module) serves any number of graphs. Sizes in no graph (eager tensors,
    # templates without a raw tensor) are kept here.
    self._sizes_no_graph: Optional[Tensor] = None
    self._last_graph: Optional[weakref.ref] = None  # graph of the sizes set last; None: _sizes_no_graph
    if dimension is None:
      self.dimension: Optional[int] = None
    elif isinstance(dimension, (bool, np.bool_)):
      raise TypeError(f"Dim {name!r}: dimension must be int, None or a size tensor, got bool {dimension!r}")
    elif isinstance(dimension, (int, np.integer)):
      if dimension < 0:
        raise ValueError(f"Dim {name!r}: static dimension must be >= 0, got {dimension}")
      self.dimension = int(dimension)
    elif isinstance(dimension, Tensor) or _is_raw_tensor(dimension):
      self.dimension = None
      if isinstance(dimension, Tensor):
        self.dyn_size_ext = dimension
      else:
        self.dyn_size = dimension
    else:
      raise TypeError(
        f"Dim {name!r}: dimension must be int, None, a raw tf.Tensor or rc.Tensor of sizes [B], "
        f"got {type(dimension).__name__} {dimension!r}"
      )

  # --- static / dynamic -------------------------------------------------------------------------

  @property
  def is_batch_dim(self) -> bool:
    return self._is_batch

  def is_static(self) -> bool:
    """Whether the size is a Python int known at graph build time (the batch dim is not)."""
    return self.dimension is not None

  def is_dynamic(self) -> bool:
    """Whether the size varies per sequence (not static and not the batch dim)."""
    return self.dimension is None and not self._is_batch

  # --- dynamic sizes ----------------------------------------------------------------------------

  @property
  def dyn_size_ext(self) -> Optional["Tensor"]:
    """Sizes ``[B]`` (int) of a dynamic dim, as a :class:`Tensor` with dims ``[batch_dim]``.

    Sizes are per ``tf.Graph``: inside a graph context (also a ``tf.while_loop`` / ``tf.cond`` body,
    whose enclosing graphs are searched) the sizes set for that graph, else None, so a second graph
    gets its own sizes (e.g. :func:`returnn_rc.graph_module.make_placeholders` sets them where they
    are None). Outside any graph context: the sizes set most recently. Sizes that are in no graph
    (eager tensors) are seen from every graph that has none of its own.
    """
    return self._sizes_in(_context_graph())

  @dyn_size_ext.setter
  def dyn_size_ext(self, sizes: Optional["Tensor"]):
    if sizes is None:
      self._clear_sizes()
      return
    self._check_can_have_sizes()
    if not isinstance(sizes, Tensor):
      raise TypeError(f"Dim {self.name!r}: dyn_size_ext must be an rc.Tensor, got {type(sizes).__name__}")
    if tuple(sizes.dims) != (batch_dim,):
      raise ValueError(f"Dim {self.name!r}: dyn_size_ext must have dims [batch_dim], got {list(sizes.dims)}")
    if sizes.raw_tensor is not None:
      _check_size_tensor(self.name, sizes.raw_tensor)
    graph = _graph_of(sizes.raw_tensor)
    if graph is None:
      self._sizes_no_graph = sizes
      self._last_graph = None
    else:
      _graph_sizes(graph, create=True)[self] = sizes
      self._last_graph = weakref.ref(graph)

  @property
  def dyn_size(self) -> Optional[tf.Tensor]:
    """Raw sizes ``[B]`` (int32 or int64) of a dynamic dim, or None if not set (per graph, see
    :attr:`dyn_size_ext`)."""
    ext = self.dyn_size_ext
    return None if ext is None else ext.raw_tensor

  @dyn_size.setter
  def dyn_size(self, sizes: Optional[RawTensor]):
    if sizes is None:
      self._clear_sizes()
      return
    self._check_can_have_sizes()
    sizes = tf.convert_to_tensor(sizes)
    _check_size_tensor(self.name, sizes)
    self.dyn_size_ext = Tensor(f"{self.name}:size", [batch_dim], sizes.dtype.name, raw_tensor=sizes)

  def _sizes_in(self, graph: Optional[tf.Graph]) -> Optional["Tensor"]:
    """The sizes seen from ``graph`` (searching its enclosing graphs); ``graph=None``: the latest."""
    if graph is None:
      last = self._last_graph() if self._last_graph is not None else None
      if last is not None:
        found = _graph_sizes(last).get(self)
        if found is not None:
          return found
      return self._sizes_no_graph
    while graph is not None:
      found = _graph_sizes(graph).get(self)
      if found is not None:
        return found
      graph = getattr(graph, "outer_graph", None)
    return self._sizes_no_graph

  def _clear_sizes(self):
    """Forgets the sizes of the current graph (outside any graph context: the latest sizes)."""
    graph = _context_graph()
    if graph is None:
      graph = self._last_graph() if self._last_graph is not None else None
      if graph is None:
        self._sizes_no_graph = None
    if graph is not None:
      _graph_sizes(graph).pop(self, None)

  def _check_can_have_sizes(self):
    if self._is_batch:
      raise ValueError("the batch dim has no per-sequence sizes; its size is read from the tensor")
    if self.dimension is not None:
      raise ValueError(f"Dim {self.name!r} is static (dimension={self.dimension}); it has no dynamic sizes")

  def get_dyn_size(self) -> tf.Tensor:
    """Raw sizes ``[B]`` (of the current graph, see :attr:`dyn_size_ext`); raises a ``ValueError``
    naming the dim if they were never set."""
    return self._get_dyn_size_in(_context_graph())

  def _get_dyn_size_in(self, graph: Optional[tf.Graph]) -> tf.Tensor:
    ext = self._sizes_in(graph)
    if ext is None or ext.raw_tensor is None:
      where = "" if graph is None else " in this graph"
      raise ValueError(
        f"dynamic Dim {self.name!r} has no sizes{where}: set dim.dyn_size (raw [B] ints) or dim.dyn_size_ext"
      )
    return ext.raw_tensor

  # --- misc -------------------------------------------------------------------------------------

  def get_dim_value(self, raw: RawTensor, axis: int) -> Union[int, tf.Tensor]:
    """The size of this dim in ``raw`` at ``axis``: the static int if known, else a scalar tensor."""
    if self.dimension is not None:
      return self.dimension
    static = raw.shape[axis] if raw.shape.rank is not None else None
    if static is not None:
      return int(static)
    return tf.shape(raw)[axis]

  def __repr__(self) -> str:
    if self._is_batch:
      return "Dim(batch)"
    if self.dimension is not None:
      return f"Dim({self.name!r}, {self.dimension})"
    return f"Dim({self.name!r}, dynamic)"


# Graph attribute (as graph_state's): a table Dim -> sizes of that graph. Weak in the Dim, so a graph never
# keeps a Dim alive, and kept on the graph, so a Dim (e.g. at module level) never keeps a graph alive.
_GRAPH_SIZES_ATTR = "_returnn_rc_dim_sizes"


def _graph_sizes(graph: tf.Graph, create: bool = False) -> "weakref.WeakKeyDictionary[Dim, Tensor]":
  table = getattr(graph, _GRAPH_SIZES_ATTR, None)
  if table is None:
    table = weakref.WeakKeyDictionary()
    if create:
      setattr(graph, _GRAPH_SIZES_ATTR, table)
  return table


def _context_graph() -> Optional[tf.Graph]:
  """The graph being built (innermost, e.g. a loop body), or None outside any graph context."""
  if tf.executing_eagerly():
    return None
  return tf.compat.v1.get_default_graph()


def _graph_of(raw: Any) -> Optional[tf.Graph]:
  """The graph of a symbolic tensor; None for None or an eager tensor."""
  if raw is None:
    return None
  try:
    return raw.graph
  except AttributeError:  # eager tensors have no graph
    return None


def _check_size_tensor(name: str, sizes: tf.Tensor):
  if sizes.dtype not in _INT_DTYPES:
    raise TypeError(f"Dim {name!r}: sizes must be int32 or int64, got {sizes.dtype.name}")
  if sizes.shape.rank is not None and sizes.shape.rank != 1:
    raise ValueError(f"Dim {name!r}: sizes must have shape [B], got shape {sizes.shape}")


def _make_batch_dim() -> Dim:
  dim = Dim(None, name="batch")
  dim._is_batch = True  # pylint: disable=protected-access
  return dim


#: The batch dim. Its size is read at run time from the tensor it appears in.
batch_dim = _make_batch_dim()


DTypeLike = Union[str, tf.DType, np.dtype, type]


def _dtype_name(dtype: DTypeLike) -> str:
  try:
    return tf.as_dtype(dtype).name
  except TypeError as exc:
    raise TypeError(f"unknown dtype {dtype!r}") from exc


class Tensor:
  """A raw ``tf.Tensor`` plus the :class:`Dim` of each axis.

  Args:
    name: name used in messages and exports.
    dims: one :class:`Dim` per axis of the raw tensor, in the raw tensor's axis order.
    dtype: e.g. ``"float32"`` (also a ``tf.DType``).
    raw_tensor: the ``tf.Tensor``; may be set later (a template, as in ``expected_outputs``).
    sparse_dim: for int class indices: the dim of the classes (e.g. the vocabulary).
    feature_dim: the feature dim, which must be one of ``dims``.
  """

  def __init__(
    self,
    name: str,
    dims: Sequence[Dim],
    dtype: DTypeLike,
    *,
    raw_tensor: Optional[RawTensor] = None,
    sparse_dim: Optional[Dim] = None,
    feature_dim: Optional[Dim] = None,
  ):
    if not isinstance(name, str) or not name:
      raise TypeError(f"Tensor name must be a non-empty str, got {type(name).__name__} {name!r}")
    self.name = name
    if isinstance(dims, (str, Dim)) or not isinstance(dims, Iterable):
      raise TypeError(f"Tensor {name!r}: dims must be a list or tuple of rc.Dim, got {type(dims).__name__} {dims!r}")
    dims = tuple(dims)
    for d in dims:
      if not isinstance(d, Dim):
        raise TypeError(f"Tensor {name!r}: dims must be rc.Dim objects, got {type(d).__name__} {d!r}")
    if len(set(map(id, dims))) != len(dims):
      raise ValueError(f"Tensor {name!r}: a dim appears twice in dims {list(dims)}")
    self._dims = dims
    self.dtype = _dtype_name(dtype)
    if sparse_dim is not None and not isinstance(sparse_dim, Dim):
      raise TypeError(f"Tensor {name!r}: sparse_dim must be an rc.Dim, got {sparse_dim!r}")
    self.sparse_dim = sparse_dim
    if feature_dim is not None and feature_dim not in dims:
      raise ValueError(f"Tensor {name!r}: feature_dim {feature_dim} is not one of dims {list(dims)}")
    self.feature_dim = feature_dim
    self._raw_tensor: Optional[tf.Tensor] = None
    if raw_tensor is not None:
      self.raw_tensor = raw_tensor

  @property
  def dims(self) -> Tuple[Dim, ...]:
    return self._dims

  @property
  def batch_ndim(self) -> int:
    """Number of axes (including the batch axis)."""
    return len(self._dims)

  @property
  def raw_tensor(self) -> Optional[tf.Tensor]:
    return self._raw_tensor

  @raw_tensor.setter
  def raw_tensor(self, raw: Optional[RawTensor]):
    if raw is None:
      self._raw_tensor = None
      return
    if isinstance(raw, tf.Variable):
      raw = tf.convert_to_tensor(raw)
    if not isinstance(raw, tf.Tensor):
      raise TypeError(f"Tensor {self.name!r}: raw_tensor must be a tf.Tensor, got {type(raw).__name__}")
    if raw.dtype.name != self.dtype:
      raise TypeError(f"Tensor {self.name!r}: raw_tensor dtype {raw.dtype.name} != declared dtype {self.dtype}")
    if raw.shape.rank is not None:
      if raw.shape.rank != len(self._dims):
        raise ValueError(
          f"Tensor {self.name!r}: dims mismatch: {len(self._dims)} dims {list(self._dims)} "
          f"but raw tensor has rank {raw.shape.rank} (shape {raw.shape})"
        )
      for axis, (d, size) in enumerate(zip(self._dims, raw.shape)):
        if d.dimension is not None and size is not None and d.dimension != size:
          raise ValueError(
            f"Tensor {self.name!r}: dims mismatch at axis {axis}: {d} has size {d.dimension} "
            f"but raw tensor shape is {raw.shape}"
          )
    self._raw_tensor = raw

  def get_raw(self) -> tf.Tensor:
    """The raw tensor; ``ValueError`` if this is only a template without one."""
    if self._raw_tensor is None:
      raise ValueError(f"Tensor {self.name!r} has no raw_tensor (it is a template)")
    return self._raw_tensor

  # --- dims -------------------------------------------------------------------------------------

  def get_axis_from_dim(self, dim: Dim) -> int:
    for i, d in enumerate(self._dims):
      if d is dim:
        return i
    raise ValueError(f"Tensor {self.name!r}: {dim} is not one of its dims {list(self._dims)}")

  def have_batch_axis(self) -> bool:
    return batch_dim in self._dims

  @property
  def dynamic_dims(self) -> Tuple[Dim, ...]:
    """The dims with per-sequence sizes, in axis order."""
    return tuple(d for d in self._dims if d.is_dynamic())

  def get_dim_value(self, dim: Dim) -> Union[int, tf.Tensor]:
    return dim.get_dim_value(self.get_raw(), self.get_axis_from_dim(dim))

  def copy_transpose(self, dims: Sequence[Dim]) -> "Tensor":
    """The same tensor with axes in the order of ``dims`` (a permutation of :attr:`dims`)."""
    dims = tuple(dims)
    check_same_dims(self, dims)
    if dims == self._dims:
      return self
    perm = [self.get_axis_from_dim(d) for d in dims]
    raw = None if self._raw_tensor is None else tf.transpose(self._raw_tensor, perm)
    return Tensor(self.name, dims, self.dtype, raw_tensor=raw, sparse_dim=self.sparse_dim, feature_dim=self.feature_dim)

  def copy_template(self, name: Optional[str] = None) -> "Tensor":
    """A template (no raw tensor) with the same dims, dtype and sparse/feature dim."""
    return Tensor(name or self.name, self._dims, self.dtype, sparse_dim=self.sparse_dim, feature_dim=self.feature_dim)

  def get_sequence_mask_broadcast(self, dim: Dim) -> tf.Tensor:
    """Bool mask of the valid frames of dynamic ``dim``, broadcastable to the raw tensor.

    The mask has the raw tensor's rank, with sizes ``B`` at the batch axis, ``T`` at the axis of
    ``dim``, and 1 elsewhere. Sizes ``[B']`` of another batch size than the tensor's are an error
    (``ValueError`` when both are static, else a run-time ``InvalidArgumentError`` naming the dim),
    never broadcast.
    """
    if not dim.is_dynamic():
      raise ValueError(f"Tensor {self.name!r}: {dim} is not a dynamic dim; it has no sequence mask")
    if not self.have_batch_axis():
      raise ValueError(
        f"Tensor {self.name!r}: dynamic dim {dim} needs the batch dim to index its sizes, "
        f"but dims are {list(self._dims)}"
      )
    raw = self.get_raw()
    time_axis = self.get_axis_from_dim(dim)
    batch_axis = self.get_axis_from_dim(batch_dim)
    sizes = dim._get_dyn_size_in(_graph_of(raw) or _context_graph())  # pylint: disable=protected-access
    check = check_sizes_batch(self, dim, sizes)
    with tf.control_dependencies(check):
      mask = tf.sequence_mask(sizes, maxlen=tf.shape(raw, out_type=sizes.dtype)[time_axis])  # [B,T]
    if batch_axis > time_axis:
      mask = tf.transpose(mask)  # [T,B]
    for axis in range(len(self._dims)):
      if axis not in (batch_axis, time_axis):
        mask = tf.expand_dims(mask, axis)
    return mask

  def __repr__(self) -> str:
    dims = ",".join("B" if d.is_batch_dim else str(d.dimension) if d.is_static() else repr(d.name) for d in self._dims)
    extra = f", sparse_dim={self.sparse_dim}" if self.sparse_dim is not None else ""
    return f"Tensor({self.name!r}, [{dims}], {self.dtype}{extra})"


def check_sizes_batch(tensor: Tensor, dim: Dim, sizes: tf.Tensor) -> List[tf.Operation]:
  """Checks that the sizes ``[B']`` of ``dim`` have the batch size ``B`` of ``tensor``.

  Returns:
    the run-time check (empty if both sizes are static, which is checked here: ``ValueError``).
  """
  raw = tensor.get_raw()
  batch_axis = tensor.get_axis_from_dim(batch_dim)
  static_b = raw.shape[batch_axis] if raw.shape.rank is not None else None
  static_n = sizes.shape[0] if sizes.shape.rank == 1 else None
  if static_b is not None and static_n is not None:
    if static_b != static_n:
      raise ValueError(
        f"Tensor {tensor.name!r}: the sizes of dim {dim.name} have batch size {static_n}, but the tensor has "
        f"batch size {static_b} (axis {batch_axis} of shape {raw.shape})"
      )
    return []
  same = tf.equal(tf.size(sizes, out_type=tf.int64), tf.shape(raw, out_type=tf.int64)[batch_axis])
  return [
    tf.debugging.Assert(
      same,
      [f"batch size mismatch: the sizes of dim {dim.name} do not have the batch size of {tensor.name}"],
      name="check_batch_size",
    )
  ]


#: Valid loss, output and extern-data names: they become op names, name scopes and signature keys
#: (``:`` is reserved for the size keys ``"<name>:size<axis>"``).
VALID_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
VALID_NAME_TEXT = "a letter or '_', then letters, digits, '_', '.' or '-' (no spaces, '/' or ':')"


def check_name(name: Any, what: str, *, key: str = "name") -> str:
  """Returns ``name`` if it is valid (:data:`VALID_NAME_TEXT`); ``TypeError`` for a non-str or empty name,
  else ``ValueError`` ("<what> name '<name>' is not a valid <key>: expected ...")."""
  if not isinstance(name, str) or not name:
    raise TypeError(f"{what} name must be a non-empty str, got {type(name).__name__} {name!r}")
  if not VALID_NAME.match(name):
    raise ValueError(f"{what} name {name!r} is not a valid {key}: expected {VALID_NAME_TEXT}")
  return name


def size_key(name: str, axis: int) -> str:
  """``"<name>:size<axis>"``: the key of the sizes ``[B]`` of dynamic axis ``axis`` (counted with the
  batch axis) of tensor ``name`` (data pipeline, signature keys, forward outputs)."""
  return f"{name}:size{axis}"


def check_same_dims(tensor: Tensor, dims: Sequence[Dim]) -> None:
  """Raises ``ValueError`` unless ``dims`` is a permutation of ``tensor.dims``."""
  if len(dims) != len(tensor.dims) or set(map(id, dims)) != set(map(id, tensor.dims)):
    raise ValueError(f"dims mismatch: {list(dims)} is not a permutation of the dims {list(tensor.dims)} of {tensor}")


def convert_to_tensor(
  raw: Any,
  *,
  dims: Optional[Sequence[Dim]] = None,
  dtype: Optional[DTypeLike] = None,
  name: Optional[str] = None,
  sparse_dim: Optional[Dim] = None,
  feature_dim: Optional[Dim] = None,
) -> Tensor:
  """Wraps ``raw`` (a ``tf.Tensor``, variable, numpy array or Python number) as a :class:`Tensor`.

  An :class:`Tensor` is returned as it is (with ``dims`` given, they must be a permutation of its
  dims, and it is transposed to that order). A non-scalar raw value needs ``dims``.
  """
  if isinstance(raw, Tensor):
    if dims is not None:
      return raw.copy_transpose(dims)
    return raw
  raw = tf.convert_to_tensor(raw, dtype=None if dtype is None else tf.as_dtype(dtype))
  if dims is None:
    if raw.shape.rank == 0:
      dims = ()
    else:
      raise ValueError(
        f"convert_to_tensor: raw tensor {raw.name if hasattr(raw, 'name') else raw} of shape {raw.shape} "
        f"needs dims (one rc.Dim per axis)"
      )
  if not isinstance(dims, (list, tuple)):
    raise TypeError(f"dims must be a list or tuple of rc.Dim, got {type(dims).__name__}")
  op_name = raw.op.name if hasattr(raw, "op") else "tensor"
  return Tensor(name or op_name, dims, raw.dtype, raw_tensor=raw, sparse_dim=sparse_dim, feature_dim=feature_dim)


class TensorDict:
  """An ordered mapping name → :class:`Tensor` (e.g. extern data, expected outputs, outputs)."""

  def __init__(self, data: Optional[Union[Dict[str, Tensor], Iterable[Tensor]]] = None):
    self.data: Dict[str, Tensor] = {}
    if data is None:
      return
    items = data.items() if isinstance(data, dict) else ((t.name, t) for t in data)
    for key, value in items:
      self[key] = value

  def __setitem__(self, key: str, value: Tensor):
    if not isinstance(key, str):
      raise TypeError(f"TensorDict keys must be str, got {key!r}")
    if not isinstance(value, Tensor):
      raise TypeError(f"TensorDict[{key!r}] must be an rc.Tensor, got {type(value).__name__}")
    self.data[key] = value

  def __getitem__(self, key: str) -> Tensor:
    try:
      return self.data[key]
    except KeyError:
      raise KeyError(f"{key!r} is not in TensorDict with keys {list(self.data)}") from None

  def __contains__(self, key: str) -> bool:
    return key in self.data

  def __iter__(self) -> Iterator[str]:
    return iter(self.data)

  def __len__(self) -> int:
    return len(self.data)

  def keys(self):
    return self.data.keys()

  def values(self):
    return self.data.values()

  def items(self):
    return self.data.items()

  def as_raw_tensor_dict(self) -> Dict[str, tf.Tensor]:
    """name → raw tensor, plus ``"<name>:size<axis>"`` → sizes ``[B]`` of each dynamic axis."""
    out = {}
    for key, tensor in self.data.items():
      raw = tensor.get_raw()
      out[key] = raw
      for axis, d in enumerate(tensor.dims):
        if d.is_dynamic():
          out[size_key(key, axis)] = d._get_dyn_size_in(_graph_of(raw) or _context_graph())  # pylint: disable=protected-access
    return out

  def __repr__(self) -> str:
    return f"TensorDict({self.data!r})"
