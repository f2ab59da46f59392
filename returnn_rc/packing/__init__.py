"""Packed frames all the way up: a loss's row-wise producers never compute padded frames.

When a loss marked with ``use_flatten_frames=True`` (the default) is reduced, the chain of row-wise
ops that produced it (elementwise ops, softmax, cross-entropy, argmax, projections, embedding
lookups, ``rc.dropout``, ...) is rebuilt on packed frames ``[sum(seq_lens), ...]``, starting where
the chain meets an op that mixes frames. See :mod:`returnn_rc.packing.rewrite` (how),
:mod:`returnn_rc.packing.rules` (which ops) and :mod:`returnn_rc.packing.switch` (on / off).

Public API:
  - ``enabled(flag)``: context manager switching the rewrite on / off / automatic; ``is_enabled()``;
    environment variable ``RETURNN_RC_PACKING`` (``0`` / ``1`` / ``auto``).
  - ``report(loss)`` / ``packed_ops(loss)``: what the rewrite did for a loss (debugging).
  - ``pack(tensor)`` / ``unpack(tensor)`` / :class:`PackedDim`: explicit packing (also ``rc.pack``).
"""

from returnn_rc.packing.explicit import PackedDim, pack, unpack
from returnn_rc.packing.loss import pack_frames_upstream, packed_ops, report
from returnn_rc.packing.rewrite import PackingReport
from returnn_rc.packing.switch import ENV_VAR, enabled, is_enabled

__all__ = [
  "ENV_VAR",
  "PackedDim",
  "PackingReport",
  "enabled",
  "is_enabled",
  "pack",
  "pack_frames_upstream",
  "packed_ops",
  "report",
  "unpack",
]
