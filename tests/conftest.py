"""pytest set-up shared by every suite.

absltest's own helpers need parsed absl flags: ``self.create_tempdir()`` / ``create_tempfile()``
(temp dirs under ``--test_tmpdir``, removed after each test) are the one way tests get temp dirs. Under
``python -m pytest`` nobody parses them, so this does it once, with their defaults.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=wrong-import-position
from absl.testing import absltest  # noqa: F401  pylint: disable=unused-import,wrong-import-position  (defines --test_tmpdir)


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
