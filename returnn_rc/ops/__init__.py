"""Custom TensorFlow ops of returnn_rc (graph mode).

``flatten_with_seq_len_mask(x [B,T,...], seq_lens [B]) -> [sum(seq_lens), ...]`` and its
inverse ``unflatten_with_seq_len_mask``.  The op libraries are built by
``returnn_rc/ops/build.py`` (``pip install --no-build-isolation -e .``) and load lazily
on first use; ``RETURNN_RC_OPS_FALLBACK=1`` selects a pure-TF implementation.
"""

from returnn_rc.ops._loader import fallback_scope, use_fallback, xla_kernels_available
from returnn_rc.ops.flatten import flatten_with_seq_len_mask, unflatten_with_seq_len_mask

__all__ = [
  "fallback_scope",
  "flatten_with_seq_len_mask",
  "unflatten_with_seq_len_mask",
  "use_fallback",
  "xla_kernels_available",
]
