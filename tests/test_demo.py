"""The demo pipeline (make demo), on a tiny budget through the same code."""
import json
import os

from train import demo

# Run by `python -m train` in a subprocess started from the repository root.
TINY_CONFIG = '''
from tests.training import tiny


def get_config(arg=None):
  return tiny.tiny_config(total_steps=3)
'''


def test_demo_trains_checkpoints_evaluates_and_reports(tmp_path, capsys):
  config = tmp_path / 'tiny.py'
  config.write_text(TINY_CONFIG)
  workdir = tmp_path / 'run'
  assert demo.main(['--workdir', str(workdir), '--config', str(config),
                    '--override', 'seed=1', '--pairs', '20',
                    '--distractors', '30', '--probe-identities', '4',
                    '--probe-images', '3']) == 0
  printed = capsys.readouterr().out
  assert '| model |' in printed and '| raw pixels |' in printed
  assert os.path.isdir(workdir / 'checkpoints' / '3')
  report = json.loads((workdir / 'eval' / 'report.json').read_text())
  assert report['checkpoint_step'] == 3 and report['overrides'] == ['seed=1']
  pairs = report['verification']['synthetic (20 pairs)']
  for method in ('model', 'raw pixels'):
    for key in ('accuracy_mean', 'accuracy_std', 'val_at_far', 'eer', 'auc'):
      assert 0 <= pairs[method][key] <= 1
    rank1 = report['identification'][method]['30']['rank1']
    assert 0 <= rank1 <= 1
  for path in report['files'].values():
    assert os.path.exists(path), path
  seconds = report['seconds']
  assert set(seconds) == {'train', 'verification', 'identification',
                          'evaluate', 'total'}
  assert seconds['evaluate'] == (seconds['verification']
                                 + seconds['identification'])
  assert seconds['total'] >= seconds['train'] + seconds['evaluate']
  with open(workdir / 'config.json', encoding='utf-8') as f:
    assert json.load(f)['seed'] == 1  # the override reached training
