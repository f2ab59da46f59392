"""Thread isolation: two graphs built at once in two threads with the engine's builder, their building
interleaved by a barrier at every run-context step (enter train step, train step done, enter forward
step, forward step done; the goldens' functions wrapped by ``goldens.with_hook``). Each thread must
see only its own run context (a context variable), get exactly its own losses and outputs, and
compute the same figures as a graph built alone."""

import threading

import numpy as np
from absl.testing import absltest, parameterized

import returnn_rc as rc
from tests.conformance import goldens


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
        seen[idx].append((event, rc.get_run_ctx() is ctx, ctx))
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
    for idx in range(2):
      self.assertEqual([e for e, _, _ in seen[idx]], list(goldens.HOOK_EVENTS))
      self.assertTrue(all(own for _, own, _ in seen[idx]), msg=f"thread {idx} saw another thread's context")
      tg = results[idx].train_graph
      self.assertEqual(
        [id(c) for _, _, c in seen[idx]],
        [id(tg.train_ctx)] * 2 + [id(tg.forward_ctx)] * 2,
        msg=f"thread {idx}: the hooked contexts are not the ones the builder used",
      )
    self.assertFalse({id(c) for _, _, c in seen[0]} & {id(c) for _, _, c in seen[1]}, msg="a context shared by threads")

    for built, golden in zip(results, (name, other)):
      reference = goldens.cached_build(golden)
      self.assertEqual(list(built.train_graph.train_ctx.losses), list(reference.losses), msg=golden)
      self.assertEqual(list(built.train_graph.forward_ctx.outputs), list(reference.train_graph.forward_ctx.outputs))
      self.assertEqual(len(built.graph.get_operations()), reference.num_ops_built, msg=golden)
      batch = reference.pad(goldens.data(golden))
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
