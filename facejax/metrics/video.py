"""Video-to-video face verification scores from per-frame features (numpy).

Conventions: a video is a (F, D) array of frame features, F >= 1 frames of
one D for every video compared. Frames are L2-normalised before anything
else, x / max(||x||, 1e-12), so an all-zero feature stays zero (and scores
0 against everything). Every frame given is scored: which frames a video
keeps (YouTube Faces' ``--max-frames``, evenly spaced) is chosen where the
frames are read (facejax.data.protocols.ytf_video_frames, before anything
is embedded), so the metric depends on no data reader. Scores are cosine
similarities: higher means more alike (verification.evaluate's
``higher_is_same=True``).
"""
import numpy as np

MODES = ('mean_embedding', 'mean_pairwise')


def _normalise(features):
  return features / np.maximum(
      np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def _frames(frame_features, name):
  """The normalised float64 (F, D) frames, or a ValueError."""
  features = np.asarray(frame_features)
  if features.ndim != 2 or not len(features) or not features.shape[1]:
    raise ValueError(f'{name} needs (F, D) frame features with F, D >= 1, '
                     f'got shape {features.shape}')
  if not np.issubdtype(features.dtype, np.number) or features.dtype == bool:
    raise ValueError(f'{name} needs numeric frame features, got '
                     f'{features.dtype}')
  features = features.astype(np.float64)
  if not np.all(np.isfinite(features)):
    raise ValueError(f'{name} needs finite frame features')
  return _normalise(features)


def video_embedding(frame_features):
  """A video's embedding: the normalised mean of its normalised frames.

    e = m / max(||m||, 1e-12),   m = 1/F sum_f x_f / max(||x_f||, 1e-12)

  over its F frames (module doc).

  Returns:
    float64 (D,) unit vector (zero if the frames cancel out).
  """
  frames = _frames(frame_features, 'video_embedding')
  return _normalise(np.mean(frames, axis=0))


def pair_scores(videos_a, videos_b, mode='mean_embedding'):
  """One cosine similarity per video pair (videos_a[i], videos_b[i]).

  ``mode``:
    * ``'mean_embedding'``: <e_a, e_b>, the cosine of the two
      :func:`video_embedding`.
    * ``'mean_pairwise'``: 1/(F_a F_b) sum_{f, g} <x_f, y_g>, the mean
      cosine over every (frame of a, frame of b) couple.

  Args:
    videos_a, videos_b: sequences of N videos, each (F, D) (F may differ).
    mode: one of MODES.

  Returns:
    float64 (N,) scores in [-1, 1].
  """
  if mode not in MODES:
    raise ValueError(f'pair_scores mode must be one of {MODES}, got {mode!r}')
  if len(videos_a) != len(videos_b):
    raise ValueError(f'pair_scores needs as many videos on both sides, got '
                     f'{len(videos_a)} and {len(videos_b)}')
  scores = np.empty(len(videos_a))
  dims = set()
  for pair, (video_a, video_b) in enumerate(zip(videos_a, videos_b)):
    name = f'pair_scores (pair {pair})'
    frames_a = _frames(video_a, name)
    frames_b = _frames(video_b, name)
    dims.update((frames_a.shape[1], frames_b.shape[1]))
    if len(dims) > 1:
      raise ValueError(f'{name} needs one feature dimension for every '
                       f'video, got {sorted(dims)}')
    if mode == 'mean_embedding':
      embedding_a = _normalise(np.mean(frames_a, axis=0))
      embedding_b = _normalise(np.mean(frames_b, axis=0))
      scores[pair] = embedding_a @ embedding_b
    else:
      scores[pair] = np.mean(frames_a @ frames_b.T)
  return scores
