"""bench.scale_plan: its ahead-of-time figures are a real step's.

Each of the two smoke points (8 simulated devices, from tests/conftest.py)
is compiled through the plan's abstract path and built for real (a state
initialised on the devices, a batch of arrays, one step run); the real
step's program, memory analysis, collectives and state shard sizes must be
the plan's. The session's persistent compilation cache (tests/conftest.py)
may serve the real lowering's compile from the plan's: it can only because
the two lowered modules are the same text, which is checked first. Then the
HLO parser on a hand-written module, and ``--smoke``.
"""
import subprocess
import sys

import jax
import numpy as np
import pytest

from bench import scale_plan
from facejax import sharding
from facejax.training import state as state_lib
from facejax.training import step as step_lib

# Two arrays of one all-reduce (iota groups of 4), one in a while body
# (groups of 2), an all-gather over the mesh axis of size 4, a
# reduce-scatter over every device, and an asynchronous collective-permute.
HLO = """HloModule m

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %v = f32[8]{0} get-tuple-element(%p), index=1
  %looped = f32[8]{0} all-reduce(%v), channel_id=5, replica_groups={{0,1},{2,3},{4,5},{6,7}}, to_apply=%add
  ROOT %t = (s32[], f32[8]{0}) tuple(%i, %looped)
}

ENTRY %main (a: f32[16,4], b: bf16[2,3], t: (s32[], f32[8])) -> f32[2,4] {
  %a = f32[16,4]{1,0} parameter(0)
  %b = bf16[2,3]{1,0} parameter(1)
  %t0 = (s32[], f32[8]{0}) parameter(2)
  %both = (f32[16,4]{1,0}, bf16[2,3]{1,0}) all-reduce(%a, %b), channel_id=1, replica_groups=[2,4]<=[8], to_apply=%add
  %gathered = f32[64,4]{1,0} all-gather(%a), channel_id=2, replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={0}
  %scattered = f32[2,4]{1,0} reduce-scatter(%a), channel_id=3, replica_groups={}, dimensions={0}, to_apply=%add
  %cp = (f32[16,4]{1,0}, f32[16,4]{1,0}, u32[], u32[]) collective-permute-start(%a), channel_id=4, source_target_pairs={{0,1},{1,0}}
  %cp.done = f32[16,4]{1,0} collective-permute-done(%cp)
  %w = (s32[], f32[8]{0}) while(%t0), condition=%cond, body=%body
  ROOT %out = f32[2,4]{1,0} copy(%scattered)
}
"""


def test_collective_bytes_of_a_hand_written_module():
  counted = scale_plan.collective_bytes(HLO, num_devices=8)
  both = 16 * 4 * 4 + 2 * 3 * 2  # f32 (16, 4) and bf16 (2, 3)
  looped = 8 * 4
  assert counted['all-reduce'] == dict(
      count=2, operand_bytes=both + looped,
      sent_bytes=round(2 * 3 / 4 * both + 2 * 1 / 2 * looped))
  assert counted['all-gather'] == dict(count=1, operand_bytes=256,
                                       sent_bytes=3 * 256)
  assert counted['reduce-scatter'] == dict(count=1, operand_bytes=256,
                                           sent_bytes=7 * 256 // 8)
  assert counted['collective-permute'] == dict(count=1, operand_bytes=256,
                                               sent_bytes=256)
  assert counted['all-to-all'] == dict(count=0, operand_bytes=0,
                                       sent_bytes=0)
  assert counted['in_loops'] == 1


@pytest.mark.parametrize('attributes,size', [
    ('replica_groups={{0,2,4},{1,3,5}}, dimensions={0}', 3),
    ('replica_groups=[4,2]<=[2,4]T(1,0), to_apply=%add', 2),
    ("replica_groups=mesh['axis_0'=1,'axis_1'=4,'axis_2'=2], "
     "device_ids=([2,4]T(1,0)) {'axis_1'}, to_apply=%add", 4),
    ("replica_groups=mesh['a'=8,'b'=2] {'a':(2)4,'b'}", 8),
    ('replica_groups={}, to_apply=%add', 16),
    ('source_target_pairs={{0,1}}', 16),
])
def test_group_size_forms(attributes, size):
  assert scale_plan.group_size(attributes, 16) == size


def test_parse_point():
  point = scale_plan.parse_point(
      'model=iresnet100,classes=1e7,devices=64,model_axis=8,fsdp=1,rate=0.1')
  assert point == scale_plan.Point('iresnet100', 10_000_000, 64, 8, True,
                                   0.1)
  assert scale_plan.parse_point(
      'model=iresnet50,classes=1000,devices=8').model_axis == 8
  with pytest.raises(ValueError, match='unknown key'):
    scale_plan.parse_point('model=iresnet50,clases=1000,devices=8')


def _real_batch(point, mesh):
  rng = np.random.default_rng(0)
  size = point.image_size
  images = rng.normal(size=(point.global_batch, size, size, 3))
  labels = rng.integers(0, point.num_classes, size=point.global_batch)
  batch_sharding = sharding.batch_sharding(mesh)
  return dict(image=jax.device_put(images.astype(np.float32), batch_sharding),
              label=jax.device_put(labels.astype(np.int32), batch_sharding))


@pytest.mark.parametrize('point', scale_plan.smoke_grid(),
                         ids=['replicated', 'fsdp-partial-fc'])
def test_abstract_figures_are_the_real_steps(point):
  record = scale_plan.compile_point(point)
  abstract_step, abstract_state, abstract_batch = scale_plan.abstract_step(
      point, scale_plan.make_point_mesh(point))

  mesh = scale_plan.make_point_mesh(point)
  model, objective, optimizer, compute_dtype = scale_plan.build(point, mesh)
  image_shape = (point.image_size, point.image_size, 3)
  with jax.set_mesh(mesh):
    state, shardings = state_lib.create(
        jax.random.key(0), model, objective, optimizer, image_shape, mesh,
        point.shard_backbone)
    step = step_lib.make_train_step(model, objective, optimizer, mesh,
                                    shardings, compute_dtype=compute_dtype)
    batch = _real_batch(point, mesh)
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics['loss']))
    lowered = step.lower(state, batch)
    # The plan compiles the very program the real step runs.
    assert lowered.as_text() == abstract_step.lower(
        abstract_state, abstract_batch).as_text()
    compiled = lowered.compile()

  figures = scale_plan.compiled_figures(compiled, point.devices)
  assert figures == {key: record[key] for key in figures}
  parts = scale_plan.state_bytes(state)
  assert parts == {key: record[key] for key in parts}
  weights = state.params['head']['class_weights']
  assert weights.addressable_shards[0].data.nbytes == (
      record['class_weight_bytes'])
  assert weights.shape[0] * weights.shape[1] // point.model_axis * 4 == (
      record['class_weight_bytes'])
  # The arguments XLA counts are the state and the batch, byte for byte.
  assert record['argument_bytes'] == sum(parts.values()) + (
      scale_plan.shard_bytes(batch))
  assert record['collectives']['in_loops'] == 0
  if point.shard_backbone:
    assert record['collectives']['all-gather']['count'] > 2  # parameters


def test_smoke_cli():
  out = subprocess.run(
      [sys.executable, '-m', 'bench.scale_plan', '--smoke', '--markdown'],
      check=True, capture_output=True, text=True, timeout=600).stdout
  lines = out.splitlines()
  header = next(i for i, line in enumerate(lines)
                if line.startswith('| backbone |'))
  rows = lines[header + 2:header + 4]
  assert [row.split(' | ')[1:6] for row in rows] == [
      ['4,000', '1', '8', '1 x 8', 'off'], ['3,000', '0.25', '8', '2 x 4',
                                            'on']]
  assert all(row.endswith('| yes (0%) | yes (0%) |') for row in rows)
  assert 'error' not in out
