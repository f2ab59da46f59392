"""Thread isolation: two graphs built at once in two threads, their building interleaved by a barrier
at every run-context step (enter train step, train step done, enter forward step, forward step
done). Each thread must see only its own run context (a context variable), get exactly its own
losses and outputs, and compute the same figures as a graph built alone."""

import threading

from absl.testing import absltest, parameterized
import numpy as np

import returnn_rc as rc
from tests.conformance import goldens

_EVENTS = ("train_ctx", "train_step_done", "forward_ctx", "forward_step_done")


def _params():
  names = goldens.names()
  return [(name, name, names[(i + 1) % len(names)]) for i, name in enumerate(names)]


class ThreadIsolationTest(parameterized.TestCase):

  @parameterized.named_parameters(*_params())
  def test_two_threads_interleaved(self, name, other):
    """Thread 0 builds ``name``, thread 1 builds ``other`` (the next golden, so their losses differ)."""
    barrier = threading.Barrier(2, timeout=120)
    seen = [[], []]
    results, errors = [None, None], [None, None]

    def worker(idx, golden):
      def hook(event, ctx):
        barrier.wait()  # both threads entered / filled their context: a shared one would be overwritten now
        seen[idx].append((event, rc.get_run_ctx() is ctx, id(ctx)))
        barrier.wait()
      try:
        results[idx] = goldens.build(golden, hook=hook)
      except BaseException as exc:  # pylint: disable=broad-except
        errors[idx] = exc
        barrier.abort()

    threads = [threading.Thread(target=worker, args=(i, g)) for i, g in enumerate((name, other))]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=300)
    for idx, err in enumerate(errors):
      if err is not None:
        raise AssertionError(f"thread {idx} failed to build") from err
    for idx, golden in enumerate((name, other)):
      self.assertEqual([e for e, _, _ in seen[idx]], list(_EVENTS))
      self.assertTrue(all(own for _, own, _ in seen[idx]), msg=f"thread {idx} saw another thread's context")
    self.assertFalse({i for _, _, i in seen[0]} & {i for _, _, i in seen[1]}, msg="a context shared by threads")

    for built, golden in zip(results, (name, other)):
      reference = goldens.cached_build(golden)
      self.assertEqual(list(built.run_ctxs["train"].losses), list(reference.losses), msg=golden)
      self.assertEqual(list(built.run_ctxs["forward"].outputs), list(reference.run_ctxs["forward"].outputs))
      self.assertEqual(len(built.graph.get_operations()), reference.num_ops_built, msg=golden)
      batch = goldens.pad(reference.template, goldens.data(golden))
      sess_ref, sess = reference.session(self), built.session(self)
      built.set_weights(sess, reference.get_weights(sess_ref))
      fetch = lambda b: {"report": b.report, "total": b.total_loss}  # pylint: disable=unnecessary-lambda-assignment
      want = sess_ref.run(fetch(reference), reference.feed(batch, train=False))
      got = sess.run(fetch(built), built.feed(batch, train=False))
      np.testing.assert_array_equal(got["total"], want["total"], err_msg=golden)
      for loss in want["report"]:
        np.testing.assert_array_equal(got["report"][loss], want["report"][loss], err_msg=f"{golden} {loss}")


if __name__ == "__main__":
  absltest.main()
