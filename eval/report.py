"""What every evaluation job writes: a printed table, a JSON report, plots.

Reports are plain JSON (numpy numbers and arrays converted); the table is
markdown, so it reads on a terminal and pastes into the README.
"""

import json
import math
import os

import numpy as np

from facejax.metrics import plots
from facejax.metrics import verification


def plain(value):
  """``value`` with numpy scalars and arrays made JSON-serialisable; NaN
  and infinities become None (JSON has neither)."""
  if isinstance(value, dict):
    return {str(k): plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return plain(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path, report):
  """Writes ``report`` to ``path`` (atomically); returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(plain(report), f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(path + '.tmp', path)
  return path


def read_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def read_jsonl(path):
  """The records of a JSON-lines file (``metrics.jsonl``)."""
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def markdown_table(header, rows):
  """A markdown table of ``rows`` (sequences of cells, already strings)."""
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |'
            for row in rows]
  return '\n'.join(lines)


def mean_std(mean, std, digits=3):
  """``0.912 ± 0.011``."""
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


VERIFICATION_HEADER = ['set', 'features', '10-fold accuracy', 'VAL@FAR=1e-3',
                       'EER', 'AUC']


def verification_report(entries, out_dir, **meta):
  """Evaluates scored pairs, writes ``verification.json`` and ``roc.png``.

  Args:
    entries: iterable of dicts with ``set``, ``method``, ``scores``,
      ``issame``, and optionally ``folds`` (None: ten equal blocks) and
      ``higher_is_same`` (False for distances).
    out_dir: where the report and the plot go.
    **meta: recorded at the top of the JSON (checkpoint step, metric...).

  Returns:
    (results {set: {method: metrics}}, markdown table, JSON path, PNG path).
  """
  return evaluated_verification_report(
      [dict(set=entry['set'], method=entry['method'],
            pairs=len(entry['issame']), result=verification.evaluate(
                entry['scores'], entry['issame'], folds=entry.get('folds'),
                higher_is_same=entry.get('higher_is_same', True)))
       for entry in entries], out_dir, **meta)


def evaluated_verification_report(entries, out_dir, **meta):
  """:func:`verification_report` of pairs already evaluated: ``entries``
  are dicts with ``set``, ``method``, ``pairs`` (their number) and
  ``result`` (:func:`facejax.metrics.verification.evaluate`'s dict, ROC
  included), as a :class:`facejax.evaluators.verification.Evaluator`
  gives them."""
  results, rows, curves = {}, [], {}
  for entry in entries:
    result = dict(entry['result'])
    roc = result.pop('roc')
    name = f"{entry['set']}, {entry['method']}"
    curves[name] = dict(fpr=roc['fpr'], tpr=roc['tpr'], auc=result['auc'])
    results.setdefault(entry['set'], {})[entry['method']] = dict(
        result, pairs=entry['pairs'])
    rows.append([entry['set'], entry['method'],
                 mean_std(result['accuracy_mean'], result['accuracy_std']),
                 mean_std(result['val_at_far'], result['val_at_far_std']),
                 f"{result['eer']:.3f}", f"{result['auc']:.4f}"])
  json_path = write_json(os.path.join(out_dir, 'verification.json'),
                         dict(meta, sets=results))
  png_path = plots.save_roc(os.path.join(out_dir, 'roc.png'), curves,
                            title='Verification ROC')
  return (results, markdown_table(VERIFICATION_HEADER, rows), json_path,
          png_path)
