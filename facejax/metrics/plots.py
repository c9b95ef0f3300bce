"""Plots of verification results, written as PNG files with matplotlib.

matplotlib is imported inside the functions, so importing this module (or
facejax.metrics) does not need it. Figures are drawn on matplotlib's Agg
canvas directly, without pyplot: no display is needed and the process's
pyplot backend (a notebook's, say) is left alone.
"""
import os

import numpy as np

# The lowest FAR shown on a log axis unless a curve has smaller nonzero ones.
MIN_LOG_FAR = 1e-4


def _curve(name, curve):
  """(fpr, tpr, auc or None) of a (fpr, tpr[, auc]) or a mapping."""
  if isinstance(curve, dict):
    fpr, tpr, auc = curve['fpr'], curve['tpr'], curve.get('auc')
  elif len(curve) in (2, 3):
    fpr, tpr, auc = (*curve, None)[:3]
  else:
    raise ValueError(f'curve {name!r} must be (fpr, tpr), (fpr, tpr, auc) or '
                     f'a dict with fpr, tpr (and auc), got {len(curve)} '
                     f'items')
  fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
  if fpr.ndim != 1 or fpr.shape != tpr.shape or not len(fpr):
    raise ValueError(f'curve {name!r} needs fpr and tpr of one shape (K,), '
                     f'got {fpr.shape} and {tpr.shape}')
  return fpr, tpr, auc


def _figure():
  """A figure on matplotlib's Agg canvas (no pyplot) and its axes."""
  from matplotlib.backends import backend_agg
  from matplotlib import figure

  fig = figure.Figure(figsize=(6, 5))
  backend_agg.FigureCanvasAgg(fig)
  return fig, fig.add_subplot()


def _save(fig, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format='png', dpi=100)
  return path


def save_cmc(path, curves, title=None):
  """Writes CMC curves (identification rate against rank) to a PNG file.

  Args:
    path: the PNG file; its folder is created if needed.
    curves: dict name -> rates at ranks 1, 2, ... (e.g. one per MegaFace
      distractor size).
    title: optional figure title.

  Returns:
    ``path``.
  """
  if not curves:
    raise ValueError('save_cmc needs at least one curve')
  fig, axes = _figure()
  for name, rates in curves.items():
    rates = np.asarray(rates, np.float64)
    axes.plot(np.arange(1, len(rates) + 1), rates, marker='o', label=name)
  axes.set_ylim(0, 1.01)
  axes.set_xlabel('rank')
  axes.set_ylabel('identification rate')
  if title:
    axes.set_title(title)
  axes.grid(True, alpha=0.3)
  axes.legend(loc='lower right')
  return _save(fig, path)


def save_roc(path, curves, title=None, log_far=True):
  """Writes ROC curves (TAR against FAR) to a PNG file.

  Args:
    path: the PNG file; its folder is created if needed.
    curves: dict name -> (fpr, tpr), (fpr, tpr, auc) or a dict with fpr and
      tpr (and optionally auc), e.g. ``dict(result['roc'],
      auc=result['auc'])`` of facejax.metrics.verification.evaluate. Each is
      drawn as a line and named in the legend, with its AUC when given.
    title: optional figure title.
    log_far: FAR on a log axis from min(1e-4, the smallest nonzero FAR of
      the curves) to 1 (points at FAR = 0 cannot be drawn there); else a
      linear axis from 0 to 1.

  Returns:
    ``path``.
  """
  if not curves:
    raise ValueError('save_roc needs at least one curve')
  parsed = {name: _curve(name, curve) for name, curve in curves.items()}
  fig, axes = _figure()
  for name, (fpr, tpr, auc) in parsed.items():
    label = name if auc is None else f'{name} (AUC {auc:.4f})'
    shown = fpr > 0 if log_far else np.ones(len(fpr), bool)
    axes.plot(fpr[shown], tpr[shown], label=label)
  if log_far:
    nonzero = [fpr[fpr > 0] for fpr, _, _ in parsed.values()]
    smallest = min([MIN_LOG_FAR] + [far.min() for far in nonzero if len(far)])
    axes.set_xscale('log')
    axes.set_xlim(smallest, 1)
  else:
    axes.set_xlim(0, 1)
  axes.set_ylim(0, 1.01)
  axes.set_xlabel('FAR (false accept rate)')
  axes.set_ylabel('TAR (true accept rate)')
  if title:
    axes.set_title(title)
  axes.grid(True, which='both', alpha=0.3)
  axes.legend(loc='lower right')
  return _save(fig, path)
