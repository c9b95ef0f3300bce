"""The training loop: resume (also after a SIGKILL inside a save, or from
damaged checkpoints), non-finite losses, config errors, meshes."""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from facejax import inference
from facejax import sharding
from facejax.training import checkpoint
from facejax.training import loop
from facejax.training import run_directory
from tests.training.tiny import leaves, saved_steps, tiny_config


def losses(run):
  return [(h['step'], h['loss']) for h in run.history]


@pytest.fixture(scope='module')
def whole_run(tmp_path_factory):
  """An uninterrupted 5-step run, the reference of the resume tests."""
  return loop.train(tiny_config(total_steps=5),
                    str(tmp_path_factory.mktemp('whole')), log=False)


def test_resume_is_exact(tmp_path, whole_run):
  whole = whole_run
  first = loop.train(tiny_config(total_steps=5), str(tmp_path / 'parts'),
                     log=False, stop_at=3)  # as if killed after step 3
  assert saved_steps(tmp_path / 'parts') == [2, 3]
  rest = loop.train(tiny_config(total_steps=5), str(tmp_path / 'parts'),
                    log=False)
  assert losses(first) + losses(rest) == losses(whole)  # bitwise, on CPU
  for a, b in zip(leaves(rest.state), leaves(whole.state)):
    np.testing.assert_array_equal(a, b)
  log = [json.loads(line) for line in
         open(tmp_path / 'parts' / 'metrics.jsonl', encoding='utf-8')]
  assert [r['step'] for r in log] == [1, 2, 3, 4, 5]
  assert os.listdir(tmp_path / 'parts' / 'tensorboard')
  # The backbone alone, restored from the config the run wrote.
  saved = run_directory.load_config(whole.workdir)
  assert saved.model.kwargs.stage_features == [4, 4, 8, 8]
  model, variables = inference.restore_backbone(saved, whole.workdir)
  for a, b in zip(leaves(variables['params']),
                  leaves(whole.state.params['backbone'])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(leaves(variables['batch_stats']),
                  leaves(whole.state.batch_stats)):
    np.testing.assert_array_equal(a, b)
  images = np.zeros((2, 32, 32, 3), np.float32)
  assert model.apply(variables, images).shape == (2, 8)


def test_non_finite_loss_stops_before_any_checkpoint_after_it(tmp_path):
  config = tiny_config(total_steps=6, checkpoint_every=1, log_every=3)
  config.optimizer.learning_rate = 1e30
  config.optimizer.warmup_steps = 0
  config.optimizer.schedule = 'constant'
  with pytest.raises(loop.NonFiniteLossError, match='the loss became'):
    loop.train(config, str(tmp_path), log=False)
  steps = saved_steps(tmp_path)
  log = [json.loads(line) for line in
         open(tmp_path / 'metrics.jsonl', encoding='utf-8')] if os.path.exists(
             tmp_path / 'metrics.jsonl') else []
  assert all(np.isfinite(r['loss']) for r in log)
  # Every saved step came before the first non-finite loss.
  assert not steps or max(steps) < 3


@pytest.mark.parametrize('key,value,message', [
    ('loss.name', 'arcfase', 'loss.name: unknown'),
    ('model.name', 'resnet9000', 'model.name: unknown'),
    ('batch_size', 12, 'does not split over the 8 devices'),
    ('num_classes', 99, 'num_classes=99 but the data has 16'),
    ('micro_batches', 4, 'micro_batches=4'),
    ('mesh', dict(model=3), 'mesh.model=3'),
])
def test_config_errors_name_the_key(tmp_path, key, value, message):
  with pytest.raises(loop.ConfigError, match=message):
    loop.train(tiny_config(**{key: value}), str(tmp_path), log=False)
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_metric_losses_need_identity_balanced_batches(tmp_path):
  config = tiny_config()
  config.loss.name = 'triplet_batch_hard'
  with pytest.raises(loop.ConfigError, match='needs P x K batches'):
    loop.train(config, str(tmp_path), log=False)


def lmle_config(**overrides):
  config = tiny_config(total_steps=5, **{
      'data.identities_per_batch': 4, 'data.images_per_identity': 4},
                       **overrides)
  config.loss = dict(name='lmle', margins=(0.1, 0.1, 0.1),
                     clusters_per_class=2, cluster_every=2)
  return config


def test_lmle_reclusters_and_resumes_exactly(tmp_path):
  whole = loop.train(lmle_config(), str(tmp_path / 'whole'), log=False)
  # Resumed from step 4 (a copy without the last checkpoint), where it
  # re-clusters (cluster_every=2).
  shutil.copytree(tmp_path / 'whole', tmp_path / 'parts')
  shutil.rmtree(tmp_path / 'parts' / 'checkpoints' / '5')
  rest = loop.train(lmle_config(), str(tmp_path / 'parts'), log=False)
  for a, b in zip(leaves(rest.state), leaves(whole.state)):
    np.testing.assert_array_equal(a, b)
  assert [h['loss'] for h in rest.history] == [
      h['loss'] for h in whole.history[4:]]
  clusters = np.asarray(whole.state.extra['clusters'])
  labels = whole.source.labels
  # Global cluster ids c * 2 + {0, 1}: each identity split in two.
  np.testing.assert_array_equal(clusters // 2, labels)
  for label in range(16):
    assert len(set(clusters[labels == label])) == 2
  assert all(0 < h['valid_quintuplets'] <= 1 for h in whole.history)


def test_lmle_config_errors(tmp_path):
  config = lmle_config()
  config.loss.cluster_every = 0
  with pytest.raises(loop.ConfigError, match='loss.cluster_every'):
    loop.train(config, str(tmp_path), log=False)


def test_resume_on_another_mesh(tmp_path, whole_run):
  # Written by the (8 data x 1 model) mesh, resumed from step 4 on (1 x 8):
  # W split over 8 devices; the last step's result matches the
  # uninterrupted run.
  shutil.copytree(whole_run.workdir, tmp_path / 'copy')
  shutil.rmtree(tmp_path / 'copy' / 'checkpoints' / '5')
  config = tiny_config(total_steps=5, mesh=dict(model=8))
  resumed = loop.train(config, str(tmp_path / 'copy'), log=False)
  weights = resumed.state.params['head']['class_weights']
  assert weights.sharding.spec == sharding.CLASS_WEIGHT_SPEC
  assert resumed.mesh.shape['model'] == 8
  assert [h['step'] for h in resumed.history] == [5]
  for a, b in zip(leaves(resumed.state.params),
                  leaves(whole_run.state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_load_config_names_the_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    run_directory.load_config(str(tmp_path))


def test_in_training_verification_is_recorded_and_kept_best(tmp_path):
  config = tiny_config(total_steps=4, checkpoint_every=2)
  config.eval.every = 2
  run = loop.train(config, str(tmp_path), log=False)
  accuracies = [h['verification_accuracy'] for h in run.history
                if 'verification_accuracy' in h]
  assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
  assert saved_steps(tmp_path) == [2, 4]


def test_config_evals_each_with_its_period_and_the_best_kept(tmp_path):
  config = tiny_config(total_steps=4, checkpoint_every=1, keep_last=1)
  config.eval.every = 2
  config.evals = ml_collections.ConfigDict(dict(held_out=dict(
      pairs=20, seed=1, every=1, metrics=('accuracy', 'eer'))))
  config.best_metric = 'held_out/eer'  # lower is better
  run = loop.train(config, str(tmp_path), log=False)
  assert [h['step'] for h in run.history
          if 'verification_accuracy' in h] == [2, 4]
  eers = {h['step']: h['held_out/eer'] for h in run.history}
  assert all(0 <= h['held_out/accuracy'] <= 1 for h in run.history)
  assert [r['held_out/eer'] for r in records(str(tmp_path))] == list(
      eers.values())
  kept = saved_steps(tmp_path)  # the last, and the best by EER
  assert 4 in kept and len(kept) <= 2
  assert min(eers[step] for step in kept) == min(eers.values())


REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def tensorboard_steps(logdir, tag='loss'):
  """The steps of ``tag`` that TensorBoard shows: the event files in order,
  where a SessionLog START at step s (tensorboardX's ``purge_step``) hides
  the events of steps >= s read before it."""
  steps = []
  for name in sorted(os.listdir(logdir)):  # events.out.tfevents.<time>...
    with open(os.path.join(logdir, name), 'rb') as f:
      data = f.read()
    position = 0
    while position < len(data):  # TFRecords: length, crc, event, crc
      length, = struct.unpack('<Q', data[position:position + 8])
      event = event_pb2.Event.FromString(
          data[position + 12:position + 12 + length])
      position += 12 + length + 4
      if event.session_log.status == event_pb2.SessionLog.START:
        steps = [step for step in steps if step < event.step]
      steps += [event.step for value in event.summary.value
                if value.tag == tag]
  return steps


def test_sigkill_inside_an_async_save_then_rerun_is_exact(tmp_path, whole_run,
                                                          capfd):
  # The run is killed while the save of step 4 waits for its commit (all
  # its files written), with step 5 possibly trained and logged meanwhile.
  workdir, marker = tmp_path / 'run', tmp_path / 'holding'
  child = subprocess.Popen(
      [sys.executable, '-m', 'tests.training.crash_worker', str(workdir), '4',
       str(marker)], cwd=REPO)
  try:
    deadline = time.monotonic() + 300
    while not marker.exists():
      assert child.poll() is None, 'the run ended before saving step 4'
      assert time.monotonic() < deadline
      time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
  finally:
    child.kill()
    child.wait()
  assert (workdir / 'checkpoints' / '4.orbax-checkpoint-tmp').is_dir()
  assert saved_steps(workdir) == [2]
  assert [r['step'] for r in records(workdir)][:4] == [1, 2, 3, 4]
  capfd.readouterr()

  rest = loop.train(tiny_config(total_steps=5), str(workdir), log=True)
  err = capfd.readouterr().err
  assert 'resuming from step 2' in err
  assert f'took over {workdir}/.lock from pid {child.pid} on ' in err
  assert 'metrics.jsonl: dropped ' in err
  for a, b in zip(leaves(rest.state), leaves(whole_run.state)):
    np.testing.assert_array_equal(a, b)
  # Every step logged once, with the uninterrupted run's values.
  assert [(r['step'], r['loss']) for r in records(workdir)] == losses(
      whole_run)
  assert tensorboard_steps(workdir / 'tensorboard') == [1, 2, 3, 4, 5]
  assert saved_steps(workdir) == [4, 5]


def test_damaged_newest_steps_refused_by_eval_skipped_by_training(
    tmp_path, whole_run, capfd):
  workdir = tmp_path / 'copy'
  shutil.copytree(whole_run.workdir, workdir)
  assert saved_steps(workdir) == [4, 5]
  checkpoints = workdir / 'checkpoints'
  (checkpoints / '9').mkdir()  # an empty folder with a higher step
  (checkpoints / '5' / 'metrics' / 'metrics').write_text('')
  config = run_directory.load_config(str(workdir))

  # Evaluation refuses, naming the step and why, and changes nothing.
  with pytest.raises(checkpoint.DamagedCheckpointError,
                     match=r'step 9 .* _CHECKPOINT_METADATA is missing; the '
                     r'newest step that looks intact is 4 \(e.g. --step 4\)'):
    inference.restore_backbone(config, str(workdir))
  with pytest.raises(checkpoint.DamagedCheckpointError,
                     match='step 5 .* metrics/metrics is empty'):
    inference.Embedder.from_workdir(str(workdir), step=5)
  _, variables = inference.restore_backbone(config, str(workdir), step=4)
  assert saved_steps(workdir) == [4, 5, 9]
  assert leaves(variables['params'])

  # Training moves both aside, says so, and redoes step 5 from step 4.
  capfd.readouterr()
  rest = loop.train(tiny_config(total_steps=5), str(workdir), log=True)
  err = capfd.readouterr().err
  assert 'checkpoints: step 9 is damaged (_CHECKPOINT_METADATA is missing)' \
      in err
  assert 'checkpoints: step 5 is damaged (metrics/metrics is empty)' in err
  assert 'resuming from step 4' in err
  assert sorted(os.listdir(checkpoints / 'damaged')) == [
      '5-bad-metrics', '9-incomplete']
  assert [h['step'] for h in rest.history] == [5]
  for a, b in zip(leaves(rest.state), leaves(whole_run.state)):
    np.testing.assert_array_equal(a, b)
  assert [r['step'] for r in records(workdir)] == [1, 2, 3, 4, 5]
  assert inference.Embedder.from_workdir(str(workdir)).step == 5
