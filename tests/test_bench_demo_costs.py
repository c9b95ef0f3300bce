"""bench.demo_costs at tiny sizes: every case measured, each in its process."""
import json

from bench import demo_costs
from facejax import cpu_host


def test_smoke_run_measures_every_setting_and_both_paths(tmp_path, capsys):
  out = tmp_path / 'costs.json'
  assert demo_costs.main(['--smoke', '--markdown', '--json', str(out)]) == 0
  printed = capsys.readouterr().out
  assert '| setting | devices | ms/step |' in printed
  figures = json.loads(out.read_text())
  cases = [name for name, _ in demo_costs.step_settings(figures['cores'])]
  assert list(figures['steps']) == cases
  # Each case ran in its own process with its own settings: the default
  # has one device whatever the tests' XLA_FLAGS say.
  devices = [r['devices'] for r in figures['steps'].values()]
  assert devices[0] == 1
  assert devices[1:] == [cpu_host.device_count(figures['cores'])] * (
      len(devices) - 1)
  for result in figures['steps'].values():
    assert result['step_ms'] > 0 and result['images_per_second'] > 0
  assert set(figures['rendering_seconds']) == {'112', '24'}
  assert list(figures['eval_batches_seconds']) == [
      'tf.data (eval_dataset)', 'numpy (eval_batches)']
  assert all(v > 0 for v in figures['eval_batches_seconds'].values())


def test_the_settings_compared_are_cpu_hosts():
  cases = dict(demo_costs.step_settings(4))
  default, *rest = cases.values()
  assert default == {'XLA_FLAGS': '', 'LD_PRELOAD': ''}
  assert rest[0]['XLA_FLAGS'] == cpu_host.environment({}, 4)['XLA_FLAGS']
  assert not rest[0]['LD_PRELOAD']
  if cpu_host.tcmalloc_path():
    assert rest[1]['LD_PRELOAD'] == cpu_host.tcmalloc_path()
  assert list(demo_costs.step_settings(1))[0][0].startswith('XLA default')
