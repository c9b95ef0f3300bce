"""bench.suite: the smoke run's table and JSON, and the time limit.

The smoke run is the whole suite at tiny sizes on the test's CPU devices:
every item must come back with a figure or a note saying why not.
"""
import contextlib
import io
import json

import pytest

from bench import suite

HEADER = '| item | figure | unit | note |'


def _table(printed):
  """The suite's final table: {item: [(figure, unit, note), ...]}."""
  lines = printed.splitlines()
  start = len(lines) - 1 - lines[::-1].index(HEADER)
  assert lines[start + 1] == '|' + '---|' * 4
  cells = {}
  for line in lines[start + 2:]:
    if not line.startswith('| '):
      break
    item, *rest = line.strip('| ').split(' | ')
    cells.setdefault(item, []).append(tuple(rest))
  return cells


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  path = tmp_path_factory.mktemp('suite') / 'suite.json'
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    returned = suite.main(['--smoke', '--markdown', '--json', str(path)])
  return returned, json.loads(path.read_text()), printed.getvalue()


def test_smoke_every_item_has_a_figure_or_a_note(smoke):
  returned, written, printed = smoke
  assert written['smoke'] is True
  assert written['device']['devices'] >= 1
  assert [item['item'] for item in written['items']] == [
      item.name for item in suite.ITEMS]
  assert written['items'] == json.loads(json.dumps(
      returned['items'], default=str))
  rows = _table(printed)
  assert list(rows) == [item.name for item in suite.ITEMS]
  for item in written['items']:
    if item['status'] == 'ok':
      assert item['figures'], item
      for figure in item['figures']:
        assert figure['value'] is not None or figure['note'], item
    else:
      assert item['status'] == 'skipped', item  # nothing fails at smoke
      assert item['note'].startswith('skipped: '), item
      assert rows[item['item']] == [('—', '', item['note'])]


def test_smoke_train_step_figures(smoke):
  _, written, printed = smoke
  items = {item['item']: item for item in written['items']}
  step = items['IResNet-50, 100k classes']
  assert step['status'] == 'ok'
  images_per_s, step_ms, mfu = step['figures']
  assert images_per_s['unit'] == 'images/s' and images_per_s['value'] > 0
  assert step['rows']['batch'] * 1e3 / step_ms['value'] == pytest.approx(
      images_per_s['value'])
  assert mfu['value'] is None and 'no peak' in mfu['note']  # a CPU
  assert step['rows']['classes'] == suite.SMOKE.classes
  assert step['rows']['dtype'] == 'bfloat16'
  ratio, = items['IResNet-50, 2M / 100k classes']['figures']
  many = items['IResNet-50, 2M classes']['rows']
  assert ratio['value'] == pytest.approx(many['step_ms']
                                         / step['rows']['step_ms'])
  # The reference runs on the CPU at smoke sizes (torch is installed here).
  torch_item = items['PyTorch reference, IResNet-50, 100k classes']
  assert torch_item['status'] == 'ok'
  assert torch_item['figures'][2]['value'] == pytest.approx(
      step['rows']['jax_over_torch'])
  rows = _table(printed)
  assert rows['IResNet-50, 100k classes'][0][1] == 'images/s'


def test_smoke_search_pipeline_detector(smoke):
  _, written, _ = smoke
  items = {item['item']: item for item in written['items']}
  search = items['MegaFace 3,530 x 1M rank-1 search']
  assert [f['unit'] for f in search['figures']] == [
      's (facejax, device)', 's (faiss, CPU)', 'x (faiss / facejax)']
  assert search['rows'][0]['agreement'] is not None
  pipeline = items['input pipeline']['figures']
  assert [f['unit'] for f in pipeline] == ['images/s per core'] * 2
  assert all(f['value'] > 0 for f in pipeline)
  detector = items['MTCNN detector']
  assert detector['status'] in ('ok', 'skipped')  # bench.detect is new


def test_tiny_time_limit_lists_every_item_as_not_run(tmp_path, capsys):
  path = tmp_path / 'suite.json'
  suite.main(['--smoke', '--markdown', '--time-limit', '0.001', '--json',
              str(path)])
  rows = _table(capsys.readouterr().out)
  written = json.loads(path.read_text())
  assert list(rows) == [item.name for item in suite.ITEMS]
  for item in written['items']:
    assert (item['status'], item['note']) == ('not run', suite.NOT_RUN)
    assert rows[item['item']] == [('—', '', suite.NOT_RUN)]


class FakeClock:
  """Seconds that pass only when an item says so."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _item(name, estimate, clock, takes, error=None):
  def run(context):
    del context
    clock.now += takes
    if error is not None:
      raise error
    return [suite.Figure(takes, 's')], None
  return suite.Item(name, (estimate, estimate), run)


def test_run_items_stops_at_the_first_that_does_not_fit():
  clock = FakeClock()
  items = [_item('first', 10, clock, 30),
           _item('skipped', 0, clock, 1, suite.Skipped('no GPU')),
           _item('fails', 0, clock, 1, RuntimeError('out of memory\nmore')),
           _item('too big', 50, clock, 1),
           _item('would fit', 1, clock, 1)]
  saved = []
  context = suite.Context(suite.SMOKE, smoke=True, torch_note=None)
  results = suite.run_items(items, context, 60, lambda r: saved.append(
      len(r)), clock=clock)
  assert [(r.status, r.note) for r in results] == [
      ('ok', ''), ('skipped', 'skipped: no GPU'),
      ('failed', 'failed: RuntimeError: out of memory'),
      ('not run', suite.NOT_RUN), ('not run', suite.NOT_RUN)]
  assert [r.seconds for r in results] == [30, 1, 1, 0, 0]
  assert saved == [1, 2, 3, 4, 5]  # the JSON is rewritten after each
  assert suite.table_lines(results)[0] == ('first', '30.0', 's', '')
