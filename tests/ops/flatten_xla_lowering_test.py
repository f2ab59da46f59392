"""XLA lowerings of FlattenWithSeqLenMask vs numpy: XLA:CPU host call and the row gather
(RETURNN_RC_XLA_HOST_CALL=0, the lowering used on non-CPU XLA devices), batch- and time-major."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from returnn_rc import ops as rc_ops
from returnn_rc.ops import _loader

_XLA = os.path.exists(_loader.XLA_SO)


def _ref(x, lens, time_major):
    t = x.shape[1]
    lens = np.clip(lens, 0, t)
    mask = np.arange(t)[None, :] < lens[:, None]
    if time_major:
        return np.transpose(x, (1, 0) + tuple(range(2, x.ndim)))[mask.T]
    return x[mask]


@absltest.skipUnless(_XLA, "xla library not built")
class XlaLoweringTest(parameterized.TestCase):

    def _run(self, host_call, x, lens, time_major):
        old = os.environ.get("RETURNN_RC_XLA_HOST_CALL")
        os.environ["RETURNN_RC_XLA_HOST_CALL"] = "1" if host_call else "0"
        try:
            fn = tf.function(lambda a, b: rc_ops.flatten_with_seq_len_mask(a, b, time_major=time_major),
                             jit_compile=True)
            return fn(tf.constant(x), tf.constant(lens)).numpy()
        finally:
            if old is None:
                os.environ.pop("RETURNN_RC_XLA_HOST_CALL")
            else:
                os.environ["RETURNN_RC_XLA_HOST_CALL"] = old

    @parameterized.product(host_call=[True, False], time_major=[False, True])
    def test_random(self, host_call, time_major):
        rng = np.random.default_rng(3)
        cases = [((1, 1, 3), np.float32), ((3, 7, 2), np.float32), ((5, 9, 2, 3), np.float64),
                 ((17, 33, 1), np.int32), ((8, 16, 4), np.float16)]
        for shape, dtype in cases:
            b, t = shape[:2]
            x = (rng.standard_normal(shape) * 100).astype(dtype)
            lens0 = rng.integers(0, t + 1, size=b)
            lens0[0], lens0[-1] = t, 0
            for lens in (lens0, rng.integers(-2, t + 3, size=b)):  # last: out of range, clamped under XLA
                lens = lens.astype(np.int32)
                got = self._run(host_call, x, lens, time_major)
                np.testing.assert_array_equal(got, _ref(x, lens, time_major),
                                              err_msg=f"{shape} {dtype} lens={lens}")


if __name__ == "__main__":
    absltest.main()
