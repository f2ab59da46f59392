"""Every graph in graphs/ follows the contract and trains, evaluates and forwards in the engine."""

import pkgutil

import numpy as np
from absl.testing import absltest, parameterized

import graphs
import returnn_rc as rc
from returnn_rc import engine

_GRAPHS = sorted(m.name for m in pkgutil.iter_modules(graphs.__path__) if not m.name.startswith("_"))


class GraphsTest(parameterized.TestCase):
  def test_reference_graphs_present(self):
    self.assertContainsSubset(
      {"char_lm", "seq_classifier", "two_losses", "ctc_acoustic", "attention_labeler"}, set(_GRAPHS)
    )

  @parameterized.parameters(*_GRAPHS)
  def test_graph(self, name):
    module = engine.load_graph_module(f"graphs.{name}")
    template = module.extern_data_template()
    self.assertIsInstance(template, rc.TensorDict)
    self.assertIsNot(list(template.values())[0].dims[-1], list(module.extern_data_template().values())[0].dims[-1])
    train = module.default_data("train", max_seqs=16)
    dev = module.default_data("dev", max_seqs=8)
    self.assertLen(train, 16)
    self.assertEqual(
      [s[k].tolist() for s in train for k in s],  # deterministic
      [s[k].tolist() for s in module.default_data("train", max_seqs=16) for k in s],
    )
    with engine.Engine(
      module,
      engine.EngineConfig(train_dir=self.create_tempdir().full_path, num_epochs=1, batch_size=8),
      train_data=train,
      dev_data=dev,
    ) as eng:
      (result,) = eng.train()
      outputs = list(eng.forward("dev"))
    self.assertTrue(all(np.isfinite(v) for v in result.train.values()))
    self.assertEqual(set(result.dev), set(result.train))
    self.assertIn("output", outputs[0])
    self.assertEqual(sum(len(b["output"]) for b in outputs), 8)


if __name__ == "__main__":
  absltest.main()
