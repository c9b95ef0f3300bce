"""Greedy and Fast NMS against plain loops, with padding masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.detection import nms


def _overlap(a, b, method):
  width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = width * height
  area_a = (a[2] - a[0]) * (a[3] - a[1])
  area_b = (b[2] - b[0]) * (b[3] - b[1])
  if method == 'union':
    return inter / (area_a + area_b - inter)
  return inter / min(area_a, area_b)


def _greedy(boxes, valid, threshold, method):
  """Zhang et al.'s loop: take the best left, drop what overlaps it."""
  keep = []
  for j in range(len(boxes)):
    if valid[j] and all(_overlap(boxes[i], boxes[j], method) <= threshold
                        for i in keep):
      keep.append(j)
  return [j in keep for j in range(len(boxes))]


def _fast(boxes, valid, threshold, method):
  """The mtcnn package's: any better valid box overlapping suppresses."""
  return [bool(valid[j]) and not any(
      valid[i] and _overlap(boxes[i], boxes[j], method) > threshold
      for i in range(j)) for j in range(len(boxes))]


def _clustered_boxes(seed, count=60):
  rng = np.random.default_rng(seed)
  centres = rng.uniform(0, 100, (5, 2))[rng.integers(0, 5, count)]
  centres = centres + rng.normal(0, 6, (count, 2))
  sides = rng.uniform(10, 30, (count, 2))
  return np.concatenate([centres - sides / 2, centres + sides / 2],
                        1).astype(np.float32)


@pytest.mark.parametrize('method, threshold', [('union', 0.5), ('union', 0.7),
                                               ('min', 0.7)])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_against_loops(method, threshold, seed):
  boxes = _clustered_boxes(seed)
  valid = np.random.default_rng(seed + 10).uniform(size=len(boxes)) > 0.2
  for greedy, loop in ((True, _greedy), (False, _fast)):
    keep = jax.jit(nms.suppress, static_argnums=(2, 3, 4))(
        jnp.asarray(boxes), jnp.asarray(valid), threshold, method, greedy)
    assert list(np.asarray(keep)) == loop(boxes, valid, threshold, method)
  # Fast NMS keeps a subset of greedy's: suppressed boxes suppress too.
  fast = _fast(boxes, valid, threshold, method)
  greedy = _greedy(boxes, valid, threshold, method)
  assert all(g or not f for f, g in zip(fast, greedy))


def test_a_chain_is_where_the_two_differ():
  # A suppresses B, B would suppress C, A does not touch C: greedy keeps
  # A and C, Fast NMS only A.
  boxes = jnp.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]],
                    jnp.float32)
  valid = jnp.ones(3, bool)
  assert list(np.asarray(nms.suppress(boxes, valid, 0.3, greedy=False))) == [
      True, False, False]
  assert list(np.asarray(nms.suppress(boxes, valid, 0.3, greedy=True))) == [
      True, False, True]


def test_batched_and_degenerate_boxes():
  boxes = jnp.stack([jnp.asarray(_clustered_boxes(s, 20)) for s in (3, 4)])
  valid = jnp.ones((2, 20), bool).at[1, 5:].set(False)
  keep = nms.suppress(boxes, valid, 0.5, greedy=True)
  for n in range(2):
    assert list(np.asarray(keep[n])) == _greedy(
        np.asarray(boxes[n]), np.asarray(valid[n]), 0.5, 'union')
  flat = jnp.zeros((3, 4))  # zero areas: overlap 0, nothing suppressed
  assert np.asarray(nms.pairwise_overlap(flat)).max() == 0
  with pytest.raises(ValueError, match="one of \\('union', 'min'\\)"):
    nms.pairwise_overlap(flat, 'max')
