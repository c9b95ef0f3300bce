"""bench.megaface_search at a tiny size, with faiss and with it hidden."""
import sys

import numpy as np
import pytest

from bench import megaface_search
from facejax.metrics import identification

TINY_ARGS = ['--probes', '24', '--identities', '6', '--distractors', '2000',
             '--dim', '128', '--chunk', '512']


def test_rank1_agrees_with_faiss(capsys):
  # faiss comes with the test extra: without it this fails, not skips.
  # pylint: disable-next=protected-access
  assert megaface_search._faiss() is not None, 'pip install faiss-cpu'
  rows = megaface_search.main(TINY_ARGS + ['--markdown'])
  printed = capsys.readouterr().out
  facejax_row, faiss_row = rows
  assert facejax_row['method'] == 'facejax'
  assert faiss_row['method'] == 'faiss IndexFlatIP'
  assert facejax_row['agreement'] is not None
  assert abs(facejax_row['rank1'] - faiss_row['rank1']) < 0.01
  assert 0 < facejax_row['rank1'] < 1
  assert facejax_row['seconds'] > 0 and faiss_row['add_seconds'] >= 0
  assert facejax_row['faiss_over_facejax'] == pytest.approx(
      faiss_row['seconds'] / facejax_row['seconds'])
  assert 'rank-1 agrees' in printed
  lines = printed.splitlines()
  header = lines.index(
      '| method | probes | distractors | dim | trials | rank-1 | time (s) | '
      'CPU time (s) | '
      'faiss add (s) | peak RSS growth (MiB) | faiss / facejax |')
  assert lines[header + 1] == '|' + '---|' * 11
  cells = lines[header + 2].strip('| ').split(' | ')
  assert cells[:6] == ['facejax', '24', '2,000', '128', '72',
                       f'{facejax_row["rank1"]:.6f}']


def test_without_faiss(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 'faiss', None)  # import faiss fails
  rows = megaface_search.main(TINY_ARGS)
  printed = capsys.readouterr().out
  assert 'faiss is not installed' in printed
  assert [row['method'] for row in rows] == ['facejax']
  assert rows[0]['faiss_over_facejax'] is None
  # The bench's rank-1 is the library's on the same features.
  probes, ids = megaface_search.probe_features(24, 6, 128, 0)
  assert rows[0]['trials'] == len(identification.trials(ids)[0])
  assert rows[0]['rank1'] == pytest.approx(brute_force_rank1(probes, ids),
                                           abs=1 / 72)


def brute_force_rank1(probes, ids):
  rng = np.random.default_rng(1)
  distractors = np.concatenate([
      rng.standard_normal((min(65_536, 2000 - start), 128), np.float32)
      for start in range(0, 2000, 65_536)])
  distractors /= np.linalg.norm(distractors, axis=1, keepdims=True)
  best = (probes @ distractors.T).max(axis=1)
  probe, mate = identification.trials(ids)
  return np.mean(best[probe] < np.sum(probes[probe] * probes[mate], axis=1))


def test_no_faiss_flag(capsys):
  rows = megaface_search.main(TINY_ARGS + ['--no-faiss'])
  assert len(rows) == 1 and 'not installed' not in capsys.readouterr().out
