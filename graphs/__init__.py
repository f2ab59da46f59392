"""Reference model graphs written against the run context (the goldens of the conformance suites).

Contract of a graph module ``graphs/<name>.py`` (RETURNN's config-function style):

- ``extern_data_template() -> rc.TensorDict``: one template :class:`rc.Tensor` (no raw tensor) per
  input, e.g. ``"data"`` with dims ``[batch_dim, time_dim]`` (``time_dim = rc.Dim(None, name="time")``),
  dtype and ``sparse_dim``. A new call returns new ``Dim`` objects (so two graphs never share dims).
  Axis 0 of every input is ``rc.batch_dim``. Dynamic dims are ``rc.Dim(None, ...)``.
- ``model_outputs_template() -> rc.TensorDict`` (optional): templates of the forward outputs, used
  as ``expected_outputs``; it may refer to dims of the extern-data template passed to it:
  ``model_outputs_template(extern_data)``.
- ``default_data(split: str, max_seqs: int | None = None) -> list[dict[str, np.ndarray]]`` with
  ``split`` in ``"train"``, ``"dev"``: one dict per sequence, name → numpy array of the template's
  shape without the batch axis and with the dynamic axes at their true (unpadded) length, dtype equal
  to the template's; deterministic; at most ``max_seqs`` sequences (tests use small subsets).
- ``dataset_from_files(files: tf.data.Dataset, *, extern_data: rc.TensorDict) -> tf.data.Dataset``
  (optional): reads ``--train_data`` / ``--dev_data`` files of the module's own format; ``files``
  yields file names (scalar ``tf.string``) in the epoch's order, the result one sequence per element
  (``{input name: tensor}``, no batch axis, true lengths). Without it the files are the engine's
  record files (``returnn_rc/engine/records.py``, written by ``tools/make_dataset.py``).
- ``get_model(*, epoch, step)``: creates the variables (in the current ``tf.compat.v1`` graph) and
  returns the model object. The graph is built once, so ``epoch`` / ``step`` are the graph's
  symbolic scalar int64 tensors (``rc.graph_state``), not Python ints.
- ``train_step(*, model, extern_data: rc.TensorDict)``: calls ``rc.get_run_ctx().mark_as_loss(...)``.
- ``forward_step(*, model, extern_data: rc.TensorDict)``: calls ``mark_as_output`` /
  ``mark_as_default_output``.

Every graph here is a golden of ``tests/conformance``: each suite runs over all of them. A golden
uses ``rc.dropout`` (the suites' positive control of the train flag fails without a random op), and
has committed artefacts in ``tests/conformance/artefacts/<name>/`` (``python -m
tests.conformance.generate_artefacts --graphs=<name>``). Modules whose name starts with ``_`` are
helpers, not graphs.

The goldens: ``char_lm`` (int tokens ``[B,T]``, frame losses ``[B,T]``), ``seq_classifier`` (a loss
``[B]`` with ``custom_inv_norm_factor``), ``two_losses`` (two scaled losses, one normalised),
``ctc_acoustic`` (float features ``[B,T,F]``, CTC ``[B]`` normalised by the target lengths, a
time-major loss ``[T,B]``), ``attention_labeler`` (a loss ``[B,S,T]`` and an output with two dynamic
dims).
"""
