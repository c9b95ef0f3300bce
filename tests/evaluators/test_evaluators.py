"""facejax.evaluators: the config's evaluators by name, config.eval's one."""
import ml_collections

from facejax import evaluators
from facejax.evaluators import verification
from tests.training.tiny import tiny_config


def test_config_eval_is_one_verification_recording_its_accuracy():
  config = tiny_config(**{'eval.every': 2, 'eval.seed': 5})
  entry, = evaluators.entries(config)
  assert entry == evaluators.Entry(
      'verification', 'verification', 2, 'verification_', 16,
      dict(pairs=40, seed=5, image_size=config.data.image_size,
           metrics=('accuracy',)))
  assert evaluators.metric_modes(config) == {'verification_accuracy': 'max'}
  assert evaluators.best_metric(config) == ('verification_accuracy', 'max')
  config.eval.bin = 'lfw.bin'
  assert evaluators.entries(config)[0].arguments == dict(
      bin='lfw.bin', metrics=('accuracy',))


def test_no_evaluator_keeps_no_best_checkpoint():
  config = tiny_config()  # eval.every = 0
  assert not evaluators.entries(config)
  assert not evaluators.from_config(config)
  assert evaluators.best_metric(config) is None


def test_config_evals_each_with_its_period_and_prefix():
  config = tiny_config(**{'eval.every': 4})
  config.evals = ml_collections.ConfigDict(dict(
      held_out=dict(pairs=20, every=2, metrics=('accuracy', 'eer')),
      other=dict(type='verification', pairs=20, seed=1, every=0,
                 prefix='x_', batch_size=8)))
  names = [entry.name for entry in evaluators.entries(config)]
  assert names == ['verification', 'held_out', 'other']
  built = evaluators.from_config(config)  # 'other' is off (every 0)
  assert [(entry.name, entry.every, entry.prefix, entry.batch_size)
          for entry, _ in built] == [('verification', 4, 'verification_', 16),
                                     ('held_out', 2, 'held_out/', 16)]
  assert all(isinstance(evaluator, verification.Evaluator)
             for _, evaluator in built)
  assert evaluators.metric_modes(config) == {
      'verification_accuracy': 'max', 'held_out/accuracy': 'max',
      'held_out/eer': 'min'}
  config.best_metric = 'held_out/eer'
  assert evaluators.best_metric(config) == ('held_out/eer', 'min')


def test_synthetic_pairs_are_drawn_at_the_models_input_side():
  """Held-out synthetic pairs come at config.data.image_size (no pixel
  drawn to be resized away), unless an entry gives its own image_size."""
  config = tiny_config(**{'eval.every': 2, 'data.image_size': 24})
  config.evals = ml_collections.ConfigDict(dict(
      same=dict(pairs=20, every=2),
      own=dict(pairs=20, every=2, image_size=40)))
  built = evaluators.from_config(config)
  sizes = {entry.name: evaluator.pair_set.source.images.shape[1:3]
           for entry, evaluator in built}
  assert sizes == dict(verification=(24, 24), same=(24, 24), own=(40, 40))
