"""The loss demonstration that `make demo` runs, on a tiny batch."""
import jax

from train import loss_demo


def test_demo_runs_every_loss_with_finite_values(capsys):
  assert loss_demo.main(['--identities', '3', '--images', '4', '--dim', '6',
                         '--classes', '5']) == 0
  table = capsys.readouterr().out
  for name, _, _ in loss_demo.loss_cases(jax.random.PRNGKey(0)):
    assert name in table
  assert ' NO' not in table
