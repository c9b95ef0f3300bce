"""The run's logs after a resume: each step logged once."""
import json
import os

from facejax.training import observe


def _write_lines(path, lines):
  path.write_text(''.join(line + '\n' for line in lines))


def test_drop_records_after_keeps_earlier_steps_and_drops_a_torn_line(
    tmp_path):
  path = tmp_path / 'metrics.jsonl'
  records = [json.dumps(dict(step=step, loss=1.0 / step))
             for step in range(1, 6)]
  _write_lines(path, records + ['{"step": 6, "lo'])  # killed mid-line
  assert observe.drop_records_after(str(path), 3) == 3
  assert path.read_text().splitlines() == records[:3]
  assert not os.path.exists(str(path) + '.tmp')
  before = os.stat(path).st_mtime_ns
  assert observe.drop_records_after(str(path), 3) == 0  # nothing to drop
  assert os.stat(path).st_mtime_ns == before  # not rewritten
  assert observe.drop_records_after(str(tmp_path / 'absent.jsonl'), 3) == 0


def test_a_resumed_writer_appends_after_the_resumed_step(tmp_path):
  writer = observe.MetricWriter(tmp_path)
  for step in (1, 2, 3):
    writer.write(step, dict(loss=float(step)))
  writer.close()
  resumed = observe.MetricWriter(tmp_path, resume_step=1)
  assert resumed.dropped == 2
  resumed.write(2, dict(loss=20.0))
  resumed.close()
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [(r['step'], r['loss']) for r in map(json.loads, lines)] == [
      (1, 1.0), (2, 20.0)]
  # A fresh run (step 0) in the workdir of a run with no checkpoint left.
  fresh = observe.MetricWriter(tmp_path, resume_step=0)
  fresh.close()
  assert fresh.dropped == 2
