"""The on-disk format of sequences: TFRecord files of ``tf.train.Example`` records, one per sequence.

A file (uncompressed TFRecord, any name; tools write ``<split>-00000-of-00004.tfrecord``) holds:

- record 0, the **schema record**: an ``Example`` with the one feature ``"returnn_rc/schema"``, a
  ``bytes_list`` of one UTF-8 JSON string::

    {"format": "returnn_rc.records", "version": 1, "graph": "char_lm",
     "inputs": [{"name": "data", "dtype": "int32", "shape": [null], "dims": ["time"], "sparse_dim": 96}]}

  one entry per extern-data input in template order: numpy dtype name, the shape of one sequence
  (no batch axis; ``null`` for a dynamic axis), the dims' names (informative), the size of the
  sparse dim or ``null``. ``"graph"`` is informative (may be absent).
- records 1.., one **sequence record** each: an ``Example`` with two features per input ``<name>``:

  - ``"<name>/value"``: ``bytes_list`` of one element, the array's raw bytes, little-endian, C order
    (``arr.astype(arr.dtype.newbyteorder("<")).tobytes()``);
  - ``"<name>/shape"``: ``int64_list``, the array's shape (no batch axis; empty for a scalar).

Reading checks every file's schema record against the graph's template before training (names,
dtypes, ranks, static sizes, sparse dim sizes), so a file of another graph, or one that is not of
this format, is refused with an error naming the file. :func:`parse_sequence` parses a sequence
record in the ``tf.data`` graph and fails (``InvalidArgumentError``) on a record that does not match.

Writing in plain TensorFlow / numpy (what :class:`RecordWriter` does)::

  import json, numpy as np, tensorflow as tf
  def feature(values):
    if isinstance(values, bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[values]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))
  schema = {"format": "returnn_rc.records", "version": 1,
            "inputs": [{"name": "data", "dtype": "int32", "shape": [None], "dims": ["time"], "sparse_dim": 96}]}
  with tf.io.TFRecordWriter("train-00000-of-00001.tfrecord") as w:
    w.write(tf.train.Example(features=tf.train.Features(feature={
        "returnn_rc/schema": feature(json.dumps(schema).encode())})).SerializeToString())
    for ids in sequences:  # int32 arrays [T]
      w.write(tf.train.Example(features=tf.train.Features(feature={
          "data/value": feature(ids.astype("<i4").tobytes()), "data/shape": feature(ids.shape)}))
              .SerializeToString())
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from returnn_rc.tensor import TensorDict, size_key

FORMAT = "returnn_rc.records"
VERSION = 1
SCHEMA_KEY = "returnn_rc/schema"
FILE_SUFFIX = ".tfrecord"
#: TFRecord framing per record: 8 bytes length, 4 bytes length CRC, the data, 4 bytes data CRC.
FRAME_OVERHEAD = 16

#: dtypes ``tf.io.decode_raw`` can decode (the format stores raw bytes).
SUPPORTED_DTYPES = (
  "bool",
  "int8",
  "uint8",
  "int16",
  "uint16",
  "int32",
  "int64",
  "float16",
  "bfloat16",
  "float32",
  "float64",
  "complex64",
  "complex128",
)


def value_key(name: str) -> str:
  return f"{name}/value"


def shape_key(name: str) -> str:
  return f"{name}/shape"


# --- schema -------------------------------------------------------------------------------------


def schema_of(template: TensorDict, *, graph_name: Optional[str] = None) -> Dict[str, Any]:
  """The schema record's JSON object for ``template`` (see the module docstring)."""
  inputs = []
  for name, tmpl in template.items():
    if tmpl.dtype not in SUPPORTED_DTYPES:
      raise TypeError(
        f"extern_data {name!r}: dtype {tmpl.dtype} cannot be stored in record files; supported: "
        f"{list(SUPPORTED_DTYPES)}"
      )
    dims = tmpl.dims[1:]
    inputs.append(
      {
        "name": name,
        "dtype": tmpl.dtype,
        "shape": [d.dimension if d.is_static() else None for d in dims],
        "dims": [d.name for d in dims],
        "sparse_dim": None if tmpl.sparse_dim is None else tmpl.sparse_dim.dimension,
      }
    )
  schema: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "inputs": inputs}
  if graph_name:
    schema["graph"] = graph_name
  return schema


def _describe(schema: Mapping[str, Any]) -> str:
  parts = []
  for inp in schema.get("inputs", []):
    shape = ",".join("T" if s is None else str(s) for s in inp.get("shape", []))
    sparse = f" sparse {inp['sparse_dim']}" if inp.get("sparse_dim") is not None else ""
    parts.append(f"{inp.get('name')}: {inp.get('dtype')} [{shape}]{sparse}")
  return "{" + "; ".join(parts) + "}"


def schema_mismatch(found: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
  """The differences between a file's schema and the graph's (empty: compatible)."""
  problems = []
  if found.get("format") != FORMAT or found.get("version") != VERSION:
    return [f"format {found.get('format')!r} version {found.get('version')!r} (expected {FORMAT!r} version {VERSION})"]
  got = {inp.get("name"): inp for inp in found.get("inputs", [])}
  want = {inp["name"]: inp for inp in expected["inputs"]}
  for name in want:
    if name not in got:
      problems.append(f"input {name!r} missing")
  for name in got:
    if name not in want:
      problems.append(f"input {name!r} not in the graph's extern_data")
  for name in want:
    if name not in got:
      continue
    g, w = got[name], want[name]
    if g.get("dtype") != w["dtype"]:
      problems.append(f"{name}: dtype {g.get('dtype')} (graph: {w['dtype']})")
    if list(g.get("shape", [])) != list(w["shape"]):
      problems.append(f"{name}: shape {g.get('shape')} (graph: {w['shape']}, null = dynamic)")
    if g.get("sparse_dim") != w["sparse_dim"] and w["sparse_dim"] is not None:
      problems.append(f"{name}: sparse dim {g.get('sparse_dim')} (graph: {w['sparse_dim']})")
  return problems


def _example(features: Mapping[str, Any]) -> bytes:
  feats = {}
  for key, value in features.items():
    if isinstance(value, bytes):
      feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    else:
      feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in value]))
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def schema_record(schema: Mapping[str, Any]) -> bytes:
  """The serialized schema record."""
  return _example({SCHEMA_KEY: json.dumps(schema, sort_keys=True).encode("utf-8")})


def encode_sequence(seq: Mapping[str, np.ndarray], schema: Mapping[str, Any]) -> bytes:
  """The serialized sequence record of ``seq`` (name → array of one sequence, no batch axis).

  Raises ``ValueError`` / ``TypeError`` naming the input if ``seq`` lacks it or its rank, dtype or a
  static size differs from the schema.
  """
  feats: Dict[str, Any] = {}
  for inp in schema["inputs"]:
    name = inp["name"]
    if name not in seq:
      raise ValueError(f"sequence has no input {name!r}; it has {sorted(seq)}")
    arr = np.asarray(seq[name])
    dtype = tf.as_dtype(inp["dtype"]).as_numpy_dtype
    if arr.dtype != dtype:
      raise TypeError(f"input {name!r}: dtype {arr.dtype} but the schema says {inp['dtype']}")
    if arr.ndim != len(inp["shape"]):
      raise ValueError(
        f"input {name!r}: rank {arr.ndim} (shape {arr.shape}) but the schema's shape is {inp['shape']} (no batch axis)"
      )
    for axis, (want, got) in enumerate(zip(inp["shape"], arr.shape)):
      if want is not None and want != got:
        raise ValueError(f"input {name!r}: axis {axis} has size {got}, the schema says {want}")
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False) if arr.dtype.byteorder == ">" else arr
    feats[value_key(name)] = np.ascontiguousarray(little).tobytes()
    feats[shape_key(name)] = list(arr.shape)
  return _example(feats)


# --- writing ------------------------------------------------------------------------------------


class RecordWriter:
  """Writes one record file: the schema record, then one record per :meth:`write`.

  The file is written under a temporary name in the same directory and renamed on :meth:`close`
  (a crash leaves no partial file under the final name). Use as a context manager.

  Args:
    path: the file to write; an existing file is an error unless ``overwrite``.
    template: the extern-data template (``graph_module.extern_data_template(module)``).
    graph_name: stored in the schema (informative).
  """

  def __init__(self, path: str, template: TensorDict, *, graph_name: Optional[str] = None, overwrite: bool = False):
    self.path = os.path.abspath(path)
    if os.path.exists(self.path) and not overwrite:
      raise ValueError(f"record file {self.path!r} already exists; pass overwrite=True (--overwrite) to replace it")
    self.schema = schema_of(template, graph_name=graph_name)
    self.num_records = 0
    fd, self._tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".tmp-", suffix=FILE_SUFFIX)
    os.close(fd)
    self._writer = tf.io.TFRecordWriter(self._tmp)
    self._writer.write(schema_record(self.schema))

  def write(self, seq: Mapping[str, np.ndarray]) -> None:
    self._writer.write(encode_sequence(seq, self.schema))
    self.num_records += 1

  def close(self) -> None:
    if self._writer is None:
      return
    self._writer.close()
    self._writer = None
    os.chmod(self._tmp, 0o644)
    os.replace(self._tmp, self.path)

  def abort(self) -> None:
    """Closes and deletes the temporary file (the final file is not written)."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
      os.remove(self._tmp)

  def __enter__(self) -> "RecordWriter":
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def shard_paths(output_dir: str, prefix: str, num_shards: int) -> List[str]:
  """``<output_dir>/<prefix>-00000-of-0000N.tfrecord`` for each shard."""
  return [os.path.join(output_dir, f"{prefix}-{i:05d}-of-{num_shards:05d}{FILE_SUFFIX}") for i in range(num_shards)]


def write_shards(
  output_dir: str,
  template: TensorDict,
  seqs: Iterable[Mapping[str, np.ndarray]],
  *,
  num_shards: int = 1,
  prefix: str = "data",
  graph_name: Optional[str] = None,
  overwrite: bool = False,
) -> List[str]:
  """Writes ``seqs`` round-robin into ``num_shards`` files (sequence ``i`` → shard ``i % num_shards``).

  Read back without shuffling, with all shards interleaved one record at a time, the sequences come
  in their original order. Returns the paths. Existing files of the same names are an error unless
  ``overwrite``; other files in ``output_dir`` are left alone.
  """
  if not isinstance(num_shards, int) or num_shards < 1:
    raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
  os.makedirs(output_dir, exist_ok=True)
  paths = shard_paths(output_dir, prefix, num_shards)
  if not overwrite:
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
      raise ValueError(
        f"record files already exist: {existing[:3]}{' ...' if len(existing) > 3 else ''}; pass "
        f"overwrite=True (--overwrite) to replace them"
      )
  writers = [RecordWriter(p, template, graph_name=graph_name, overwrite=True) for p in paths]
  try:
    for i, seq in enumerate(seqs):
      try:
        writers[i % num_shards].write(seq)
      except (ValueError, TypeError) as exc:
        raise type(exc)(f"sequence {i}: {exc}") from None
  except BaseException:
    for w in writers:
      w.abort()
    raise
  for w in writers:
    w.close()
  return paths


# --- reading: files, schema, parsing ------------------------------------------------------------


def list_files(patterns: Any, *, what: str = "data") -> List[str]:
  """The sorted files matching ``patterns`` (a glob, a comma-free list of globs, or file names).

  Raises ``ValueError`` naming the pattern if one matches no file, or names a directory.
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  if not patterns or not all(isinstance(p, str) and p for p in patterns):
    raise ValueError(f"{what}: expected a glob of record files (or a list of globs), got {patterns!r}")
  files = []
  for pattern in patterns:
    matched = sorted(tf.io.gfile.glob(pattern))
    if not matched:
      raise ValueError(
        f"{what}: no file matches {pattern!r} (expected record files written by "
        f"tools/make_dataset.py, e.g. 'data/train-*.tfrecord')"
      )
    for path in matched:
      if tf.io.gfile.isdir(path):
        raise ValueError(
          f"{what}: {path!r} (matched by {pattern!r}) is a directory, expected record files; use a "
          f"glob such as '{os.path.join(path, '*' + FILE_SUFFIX)}'"
        )
    files.extend(matched)
  return sorted(dict.fromkeys(files))


def _read_first_record(path: str) -> Tuple[Optional[bytes], Optional[str]]:
  """(first record, None), or (None, why it cannot be read). Reads the TFRecord framing in Python (its
  CRCs are checked when the data is read: the scan of :func:`returnn_rc.engine.data.scan_files`)."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    header = f.read(12)
    if len(header) < 12:
      return None, f"it is too short to hold a TFRecord ({len(header)} bytes)"
    (length,) = struct.unpack("<Q", header[:8])
    if length + FRAME_OVERHEAD > size:
      return None, (
        f"its first 8 bytes give a record length of {length} bytes, more than the file's {size} bytes "
        f"(not a TFRecord file?)"
      )
    return f.read(length), None


def read_schema(path: str) -> Dict[str, Any]:
  """The schema of record file ``path``.

  Raises ``ValueError`` naming the file if it is empty, not a TFRecord file, or does not start with
  a schema record of this format.
  """
  if not os.path.isfile(path):
    raise ValueError(f"record file {path!r} does not exist or is not a file")
  if os.path.getsize(path) == 0:
    raise ValueError(
      f"record file {path!r} is empty (0 bytes); expected a TFRecord file starting with a "
      f"{SCHEMA_KEY!r} schema record (write it with tools/make_dataset.py)"
    )
  record, why = _read_first_record(path)
  if record is None:
    raise ValueError(f"record file {path!r} is not a TFRecord file of returnn_rc records: {why}")
  try:
    example = tf.train.Example.FromString(record)
  except Exception:  # pylint: disable=broad-except  (protobuf's DecodeError)
    example = None
  feature = None if example is None else example.features.feature.get(SCHEMA_KEY)
  if feature is None or len(feature.bytes_list.value) != 1:
    keys = [] if example is None else sorted(example.features.feature)
    raise ValueError(
      f"record file {path!r} is a TFRecord file but its first record is not a returnn_rc schema record "
      f"(an Example with feature {SCHEMA_KEY!r}; found features {keys[:6]}); see returnn_rc.engine.records for the "
      f"format, or write the files with tools/make_dataset.py"
    )
  try:
    schema = json.loads(feature.bytes_list.value[0].decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as exc:
    raise ValueError(f"record file {path!r}: the schema record is not valid JSON ({exc})") from None
  if not isinstance(schema, dict) or not isinstance(schema.get("inputs"), list):
    raise ValueError(f"record file {path!r}: the schema record has no 'inputs' list: {schema!r}")
  return schema


def check_files(
  files: Sequence[str], template: TensorDict, *, what: str = "data", graph_name: Optional[str] = None
) -> List[int]:
  """Reads each file's schema and compares it to ``template``; returns each schema record's size in bytes.

  Raises ``ValueError`` naming the file for an empty file, a file of another format, or a file of
  another graph's schema (naming both schemas and the differences).
  """
  expected = schema_of(template, graph_name=graph_name)
  sizes = []
  for path in files:
    schema = read_schema(path)
    problems = schema_mismatch(schema, expected)
    if problems:
      written = f" (written for graph {schema['graph']!r})" if schema.get("graph") else ""
      raise ValueError(
        f"{what}: record file {path!r}{written} holds {_describe(schema)}, but graph "
        f"{graph_name or '?'!r} expects {_describe(expected)}: " + "; ".join(problems)
      )
    sizes.append(len(schema_record(schema)))
  return sizes


def _parse_spec(template: TensorDict) -> Dict[str, tf.io.FixedLenFeature]:
  spec = {}
  for name, tmpl in template.items():
    spec[value_key(name)] = tf.io.FixedLenFeature([], tf.string)
    rank = tmpl.batch_ndim - 1
    if rank:
      spec[shape_key(name)] = tf.io.FixedLenFeature([rank], tf.int64)
  return spec


def parse_sequence(template: TensorDict, serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  """One sequence record → ``{name: [dims without batch], "<name>:size<axis>": int32 []}`` (graph ops).

  Fails at run time (``InvalidArgumentError``) for a record that is no ``Example``, lacks a
  feature, or whose shape does not match the template (rank, static sizes, byte count, two inputs
  sharing a dynamic dim with different lengths).
  """
  parsed = tf.io.parse_single_example(serialized, _parse_spec(template))
  out: Dict[str, tf.Tensor] = {}
  checks = []
  dim_lens: Dict[int, tf.Tensor] = {}
  for name, tmpl in template.items():
    dims = tmpl.dims[1:]
    static = [d.dimension if d.is_static() else None for d in dims]
    flat = tf.io.decode_raw(parsed[value_key(name)], tf.as_dtype(tmpl.dtype), little_endian=True)
    if dims:
      shape = parsed[shape_key(name)]
      for axis, (d, want) in enumerate(zip(dims, static)):
        if want is not None:
          checks.append(
            tf.debugging.assert_equal(
              shape[axis], tf.constant(want, tf.int64), message=f"record input {name!r} axis {axis}: static size"
            )
          )
        else:
          prev = dim_lens.setdefault(id(d), shape[axis])
          if prev is not shape[axis]:
            checks.append(
              tf.debugging.assert_equal(
                prev, shape[axis], message=f"record input {name!r} axis {axis}: shared dynamic dim {d.name}"
              )
            )
      with tf.control_dependencies(checks):
        value = tf.reshape(flat, shape)
      value = tf.ensure_shape(value, static)
    else:
      value = tf.reshape(flat, [])
    out[name] = value
    for axis, d in enumerate(tmpl.dims):
      if d.is_dynamic():
        out[size_key(name, axis)] = tf.shape(value, out_type=tf.int32)[axis - 1]
  return out


def batch_parse_supported(template: TensorDict) -> bool:
  """Whether :func:`parse_batch` handles ``template``: every input has at most one dynamic dim, at
  axis 1 (``[B,T,...]`` with static ``...``, or only static dims)."""
  for tmpl in template.values():
    dynamic = [axis for axis, d in enumerate(tmpl.dims) if d.is_dynamic()]
    if dynamic and dynamic != [1]:
      return False
  return True


def record_lengths(template: TensorDict, serialized: tf.Tensor, length_key: str) -> tf.Tensor:
  """``[N]`` int32: the value of size key ``length_key`` (``"<name>:size<axis>"``) of each of the
  ``[N]`` serialized sequence records (parses only that input's shape feature)."""
  name, axis = length_key.rsplit(":size", 1)
  rank = template[name].batch_ndim - 1
  shapes = tf.io.parse_example(serialized, {shape_key(name): tf.io.FixedLenFeature([rank], tf.int64)})
  return tf.cast(shapes[shape_key(name)][:, int(axis) - 1], tf.int32)


def parse_batch(
  template: TensorDict, serialized: tf.Tensor, pad_to: Optional[tf.Tensor] = None
) -> Dict[str, tf.Tensor]:
  """``[B]`` serialized sequence records → one padded batch ``{name: [B,T,...], "<name>:size1": [B]}``
  in one vectorized parse (graph ops; needs :func:`batch_parse_supported`).

  Args:
    template: the extern-data template.
    serialized: ``[B]`` string.
    pad_to: scalar int32: pad the dynamic dims to this length (it must be >= the longest); None or
      negative: to the longest in the batch.
  Fails at run time (``InvalidArgumentError``) on a record that :func:`parse_sequence` refuses.
  """
  parsed = tf.io.parse_example(serialized, _parse_spec(template))
  out: Dict[str, tf.Tensor] = {}
  dim_lens: Dict[int, tf.Tensor] = {}
  for name, tmpl in template.items():
    dims = tmpl.dims[1:]
    dtype = tf.as_dtype(tmpl.dtype)
    itemsize = np.dtype(dtype.as_numpy_dtype).itemsize
    values = parsed[value_key(name)]
    checks = []
    static_rest = [d.dimension for d in dims if d.is_static()]
    per_row = int(np.prod(static_rest, dtype=np.int64)) if static_rest else 1
    if dims:
      shape = parsed[shape_key(name)]  # [B, rank]
      for axis, d in enumerate(dims):
        if d.is_static():
          checks.append(
            tf.debugging.assert_equal(
              shape[:, axis],
              tf.constant(d.dimension, tf.int64),
              message=f"record input {name!r} axis {axis}: static size",
            )
          )
      count = tf.reduce_prod(shape, axis=1)
      checks.append(
        tf.debugging.assert_equal(
          tf.cast(tf.strings.length(values), tf.int64),
          count * itemsize,
          message=f"record input {name!r}: byte count of the values != prod(shape) * {itemsize}",
        )
      )
    if dims and dims[0].is_dynamic():
      lens = shape[:, 0]
      prev = dim_lens.setdefault(id(dims[0]), lens)
      if prev is not lens:
        checks.append(
          tf.debugging.assert_equal(prev, lens, message=f"record input {name!r}: shared dynamic dim {dims[0].name}")
        )
      longest = tf.reduce_max(tf.concat([lens, [0]], 0))
      if pad_to is not None:
        longest = tf.where(pad_to >= 0, tf.cast(pad_to, tf.int64), longest)
      with tf.control_dependencies(checks):
        flat = tf.io.decode_raw(
          values, dtype, little_endian=True, fixed_length=tf.cast(tf.maximum(longest * per_row, 1) * itemsize, tf.int32)
        )
      batch = tf.shape(values, out_type=tf.int64)[:1]
      rest = tf.constant(static_rest, tf.int64, shape=[len(static_rest)])
      value = tf.reshape(flat[:, : longest * per_row], tf.concat([batch, [longest], rest], 0))
      out[name] = tf.ensure_shape(value, [None, None] + static_rest)
      out[size_key(name, 1)] = tf.cast(lens, tf.int32)
    else:
      with tf.control_dependencies(checks):
        flat = tf.io.decode_raw(values, dtype, little_endian=True)
      batch = tf.shape(values)[:1]
      rest = tf.constant(static_rest, tf.int32, shape=[len(static_rest)])
      out[name] = tf.ensure_shape(tf.reshape(flat, tf.concat([batch, rest], 0)), [None] + static_rest)
  return out


# --- locating corrupt records (slow path, Python) -----------------------------------------------


def error_summary(exc: tf.errors.OpError) -> str:
  """The line of a TF run-time error that says what went wrong (not the graph-execution preamble)."""
  lines = [line.strip() for line in exc.message.splitlines()]
  skip = ("Graph execution error", "Detected at node", "File ", "Node:", "[[")
  useful = [line for line in lines if line and not line.startswith(skip)]
  return useful[0] if useful else lines[0]


def _check_record_py(record: bytes, template: TensorDict) -> Optional[str]:
  """Why ``record`` is not a valid sequence record for ``template`` (None: valid); mirrors :func:`parse_sequence`."""
  try:
    example = tf.train.Example.FromString(record)
  except Exception as exc:  # pylint: disable=broad-except  (protobuf's DecodeError)
    return f"not a tf.train.Example ({type(exc).__name__})"
  feats = example.features.feature
  dim_lens: Dict[int, int] = {}
  for name, tmpl in template.items():
    dims = tmpl.dims[1:]
    if value_key(name) not in feats or len(feats[value_key(name)].bytes_list.value) != 1:
      return f"no feature {value_key(name)!r} (one bytes value)"
    shape = list(feats[shape_key(name)].int64_list.value) if shape_key(name) in feats else []
    if dims and len(shape) != len(dims):
      return f"feature {shape_key(name)!r} = {shape}, expected {len(dims)} sizes"
    shape = shape if dims else []
    for axis, (d, got) in enumerate(zip(dims, shape)):
      if got < 0 or (d.is_static() and d.dimension != got):
        return f"input {name!r} axis {axis} has size {got}, expected {d.dimension}"
      if d.is_dynamic() and dim_lens.setdefault(id(d), got) != got:
        return (
          f"input {name!r} axis {axis}: dynamic dim {d.name!r} has length {got} here but "
          f"{dim_lens[id(d)]} in another input sharing it"
        )
    itemsize = np.dtype(tf.as_dtype(tmpl.dtype).as_numpy_dtype).itemsize
    nbytes = len(feats[value_key(name)].bytes_list.value[0])
    if nbytes != int(np.prod(shape, dtype=np.int64)) * itemsize:
      return f"input {name!r}: {nbytes} bytes of values for shape {shape} of {tmpl.dtype}"
  return None


def count_frames(path: str, start_offset: int = 0) -> Tuple[int, bool]:
  """(number of TFRecord frames from ``start_offset`` on, following the length fields without checking
  CRCs; whether the frames end exactly at the end of the file)."""
  size = os.path.getsize(path)
  count, offset = 0, start_offset
  with open(path, "rb") as f:
    while offset + 12 <= size:
      f.seek(offset)
      (length,) = struct.unpack("<Q", f.read(8))
      if offset + FRAME_OVERHEAD + length > size:
        return count, False
      offset += FRAME_OVERHEAD + length
      count += 1
  return count, offset == size


def _readable_count(path: str) -> Tuple[int, Optional[str]]:
  """(number of records TF's reader delivers from ``path`` before an error, that error's summary or None)."""
  with tf.Graph().as_default():
    count = tf.data.TFRecordDataset(path).ignore_errors().reduce(tf.constant(0, tf.int64), lambda c, _: c + 1)
    with tf.compat.v1.Session() as sess:
      n = int(sess.run(count))
    probe = tf.compat.v1.data.make_one_shot_iterator(tf.data.TFRecordDataset(path).skip(n).take(1)).get_next()
    with tf.compat.v1.Session() as sess:
      try:
        sess.run(probe)
      except tf.errors.OutOfRangeError:
        return n, None
      except tf.errors.OpError as exc:
        return n, error_summary(exc)
  return n, None


def inspect_records(path: str, template: TensorDict, *, limit: int = 3) -> Tuple[List[Tuple[int, str]], int]:
  """``(bad, valid)``: the first ``limit`` bad records of ``path`` as (record index, why) (index 0 is the
  schema record) and the number of valid sequence records that TF's reader delivers. A record TF
  cannot read (data loss) ends the file: its reader skips the rest. For error messages and skip
  counts (Python per record, but only for files found corrupt)."""
  readable, error = _readable_count(path)
  bad: List[Tuple[int, str]] = []
  valid = 0
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    offset = 0
    for index in range(readable):
      f.seek(offset)
      (length,) = struct.unpack("<Q", f.read(8))
      f.seek(offset + 12)
      record = f.read(length)
      offset += FRAME_OVERHEAD + length
      if index == 0:
        continue
      why = _check_record_py(record, template)
      if why is None:
        valid += 1
      elif len(bad) < limit:
        bad.append((index, why))
  if error is not None and offset < size and len(bad) < limit:
    bad.append((readable, f"unreadable: {error}; TF's reader skips the rest of the file"))
  return bad, valid
