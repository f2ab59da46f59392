"""Exact cross-replica normalisation of the run context under ``MirroredStrategy`` on two logical CPU devices.

The strategy part runs in one subprocess (:mod:`tests.distributed.core_replica_script`): logical devices must
be configured before TensorFlow initialises its devices, which a test process (pytest, xdist) may have done.
Compared: one replica on the whole batch vs two replicas on the batch split in two (padded otherwise), dropout
on; with the run context's cross-replica reduction (equal) and without it (the negative control: differs).
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_RTOL = 1e-6


def _run_script():
  with tempfile.TemporaryDirectory(prefix="rc_core_replica_") as tmp:
    out = os.path.join(tmp, "result.json")
    env = dict(
      os.environ,
      PYTHONPATH=os.pathsep.join([_ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
      TF_CPP_MIN_LOG_LEVEL="2",
      CUDA_VISIBLE_DEVICES="",
    )
    proc = subprocess.run(
      [sys.executable, "-m", "tests.distributed.core_replica_script", out],
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    if proc.returncode != 0:
      raise AssertionError(f"core_replica_script failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    with open(out, encoding="utf-8") as f:
      return json.load(f)


def _summed_grads(run):
  names = run["replicas"][0]["grads"]
  return {k: sum(np.array(r["grads"][k]) for r in run["replicas"]) for k in names}


def _rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


class CrossReplicaTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.result = _run_script()

  def test_num_replicas(self):
    self.assertEqual(self.result["single"]["num_replicas"], 1)
    self.assertEqual(self.result["mirrored"]["num_replicas"], [2, 2])

  def test_figures_equal_one_replica(self):
    single = self.result["single"]["figures"]
    self.assertEqual(set(single), {"tag_ce", "aux_ce", "tag_err", "seq", "aux_nf"})
    for replica in self.result["mirrored"]["replicas"]:
      for name, want in single.items():
        for what, got_v, want_v in zip(("summed", "inv_norm", "mean"), replica["figures"][name], want):
          self.assertLessEqual(_rel_err(got_v, want_v), _RTOL, f"{name} {what}: {got_v} vs {want_v}")
      self.assertLessEqual(_rel_err(replica["total"], self.result["single"]["total"]), _RTOL)

  def test_summed_gradients_equal_one_replica(self):
    single = self.result["single"]["grads"]
    summed = _summed_grads(self.result["mirrored"])
    for name, want in single.items():
      self.assertLessEqual(_rel_err(summed[name], want), _RTOL, f"gradient of {name}")

  def test_negative_control_local_normalisation_differs(self):
    single = self.result["single"]
    local = self.result["local"]
    for name in ("aux_ce", "seq", "aux_nf"):  # normalised losses: each replica divides by its own count
      means = [r["figures"][name][2] for r in local["replicas"]]
      self.assertTrue(
        all(abs(m - single["figures"][name][2]) > 1e-3 * abs(single["figures"][name][2]) for m in means),
        f"{name}: local means {means} vs global {single['figures'][name][2]}",
      )
    summed = _summed_grads(local)
    self.assertGreater(max(_rel_err(summed[k], v) for k, v in single["grads"].items()), 1e-2)

  def test_one_collective_per_step(self):
    calls = self.result["mirrored"]["collective_calls"]
    # One batch_reduce_to of one value (the [2 * 5] vector of all 5 losses); ReductionToOneDevice sums the two
    # replicas' vectors with one AddN.
    self.assertLen(calls, 1)
    self.assertEqual(calls[0]["values"], 1)
    self.assertEqual(calls[0]["ops"].count("AddN"), 1)
    self.assertEqual(self.result["local"]["collective_calls"], [])  # control: no reduction without it

  def test_marking_after_reduction_is_an_error(self):
    errors = self.result["mirrored"]["marked_after_reduction_error"]
    self.assertLen(errors, 2)
    for error in errors:
      self.assertIn("mark_as_loss('b') called after the losses ['a'] were reduced across replicas", error)


if __name__ == "__main__":
  absltest.main()
