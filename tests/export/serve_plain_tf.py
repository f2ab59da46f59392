"""Serves exported SavedModels with plain TensorFlow only (run as a script; never imports returnn_rc).

    python tests/export/serve_plain_tf.py JOBS.json

``JOBS.json``: a list of ``{"export_dir", "feeds", "out"}``. ``feeds`` is an ``.npz`` with keys
``"<batch>/<signature key>"``; ``out`` gets, for each batch and signature output key:

- ``"tf1/<batch>/<key>"``: ``tf.compat.v1.saved_model.loader.load`` + ``Session.run``;
- ``"tf1_train_flag/<batch>/<key>"``: the same, also feeding ``returnn_rc_state/train_flag:0`` = True
  (only if the graph has that tensor: flipping it must change nothing);
- ``"tf2/<batch>/<key>"``: ``tf.saved_model.load(dir).signatures["serving_default"]``.

It also writes ``"modules"``: whether ``returnn_rc`` was imported (it must not be).
"""

import collections
import json
import sys

import numpy as np
import tensorflow as tf

TRAIN_FLAG = "returnn_rc_state/train_flag:0"


def _batches(path):
  with np.load(path) as data:
    batches = collections.defaultdict(dict)
    for key in data.files:
      batch, sig_key = key.split("/", 1)
      batches[int(batch)][sig_key] = data[key]
  return [batches[i] for i in sorted(batches)]


def _serve_tf1(export_dir, batches, out):
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    sig = meta.signature_def["serving_default"]
    inputs = {k: graph.get_tensor_by_name(v.name) for k, v in sig.inputs.items()}
    fetches = {k: graph.get_tensor_by_name(v.name) for k, v in sig.outputs.items()}
    names = {t.name for op in graph.get_operations() for t in op.outputs}
    for i, feed in enumerate(batches):
      feed_dict = {inputs[k]: v for k, v in feed.items()}
      for key, value in sess.run(fetches, feed_dict).items():
        out[f"tf1/{i}/{key}"] = value
      if TRAIN_FLAG in names:
        feed_dict[graph.get_tensor_by_name(TRAIN_FLAG)] = True
        for key, value in sess.run(fetches, feed_dict).items():
          out[f"tf1_train_flag/{i}/{key}"] = value


def _serve_tf2(export_dir, batches, out):
  fn = tf.saved_model.load(export_dir).signatures["serving_default"]
  for i, feed in enumerate(batches):
    for key, value in fn(**{k: tf.constant(v) for k, v in feed.items()}).items():
      out[f"tf2/{i}/{key}"] = value.numpy()


def main(jobs_path):
  with open(jobs_path, encoding="utf-8") as f:
    jobs = json.load(f)
  for job in jobs:
    batches = _batches(job["feeds"])
    out = {}
    _serve_tf1(job["export_dir"], batches, out)
    _serve_tf2(job["export_dir"], batches, out)
    out["returnn_rc_imported"] = np.array(any(m.split(".")[0] == "returnn_rc" for m in sys.modules))
    np.savez(job["out"], **out)
  if "returnn_rc" in sys.modules:
    raise SystemExit("returnn_rc was imported")
  print("SERVED", len(jobs))


if __name__ == "__main__":
  main(sys.argv[1])
