"""python -m facejax.interop: an imported model is an ordinary run workdir
that the evaluation jobs, the Embedder and init_from take unchanged."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from eval import lfw  # noqa: E402
from facejax import inference  # noqa: E402
from facejax.data import sources  # noqa: E402
from facejax.interop import __main__ as cli  # noqa: E402
from facejax.training import loop  # noqa: E402
from facejax.training import run_directory  # noqa: E402
from bench import arcface_torch_models as reference  # noqa: E402
from tests.training.tiny import leaves  # noqa: E402
from tests.training.tiny import tiny_config  # noqa: E402

SIZE = 32


@pytest.fixture(scope='module')
def released(tmp_path_factory):
  """A 'released' arcface_torch checkpoint with tiny_config's backbone
  shape, and the run workdir import-torch made of it."""
  directory = tmp_path_factory.mktemp('released')
  kwargs = tiny_config().model.kwargs
  net = reference.randomise(reference.IResNet(
      kwargs.stage_units, kwargs.stage_features, kwargs.stem_features,
      kwargs.embedding_dim, SIZE), 0, SIZE)
  path = str(directory / 'model.pt')
  torch.save(net.state_dict(), path)
  workdir = str(directory / 'run')
  assert cli.main(['import-torch', path, '--workdir', workdir]) == 0
  return net, path, workdir


def photos(count=6, seed=0):
  return np.random.default_rng(seed).integers(
      0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def normalised(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_import_writes_a_run_workdir(released, capsys):
  _, path, workdir = released
  config = run_directory.load_config(workdir)
  assert config.model.name == 'iresnet'
  assert config.data.image_size == SIZE
  assert config.compute_dtype == 'float32'
  assert config.imported.format == 'torch'
  assert config.imported.file == os.path.abspath(path)
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['0']


def test_the_embedder_reproduces_pytorch_with_the_flip_test(released):
  net, _, workdir = released
  images = photos()
  embedder = inference.Embedder.from_workdir(workdir)
  features = embedder.embed(sources.InMemory(images, np.zeros(6, int)),
                            progress=False)
  # insightface's protocol: x / 127.5 - 1, embedding of the image plus its
  # mirror image's, L2-normalised.
  x = images.astype(np.float32) / 127.5 - 1
  expected = normalised(reference.embed(net, x)
                        + reference.embed(net, x[:, :, ::-1].copy()))
  np.testing.assert_allclose(features, expected, atol=1e-5)


def test_an_evaluation_job_takes_the_imported_workdir(released, tmp_path,
                                                      capsys):
  _, _, workdir = released
  out = str(tmp_path / 'eval')
  assert lfw.main(['--checkpoint', workdir, '--synthetic', '40',
                   '--out', out]) == 0
  assert 'synthetic' in capsys.readouterr().out
  assert os.listdir(out)


def test_init_from_fine_tunes_from_the_imported_backbone(released, tmp_path):
  _, _, workdir = released
  config = tiny_config(total_steps=1, init_from=workdir)
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=0.0, weight_decay=0.0, warmup_steps=0,
      schedule='constant'))
  tuned = loop.train(config, str(tmp_path / 'tuned'), log=False)
  imported = inference.Embedder.from_workdir(workdir).variables['params']
  # A zero learning rate: the backbone is still the imported one.
  for a, b in zip(leaves(tuned.state.params['backbone']), leaves(imported)):
    np.testing.assert_array_equal(a, b)


def test_a_workdir_holding_a_run_is_not_overwritten(released, capsys):
  _, path, workdir = released
  before = json.load(open(os.path.join(workdir, 'config.json')))
  assert cli.main(['import-torch', path, '--workdir', workdir]) == 1
  assert 'already holds a run' in capsys.readouterr().err
  assert json.load(open(os.path.join(workdir, 'config.json'))) == before


def test_refusals_are_one_line_errors(tmp_path, capsys):
  evil = tmp_path / 'evil.pt'

  class RunsCode:
    def __reduce__(self):
      return (os.system, (f'touch {tmp_path / "ran"}',))

  torch.save({'conv1.weight': torch.zeros(1), 'x': RunsCode()}, evil)
  assert cli.main(['import-torch', str(evil), '--workdir',
                   str(tmp_path / 'a')]) == 1
  assert 'refused' in capsys.readouterr().err
  assert not (tmp_path / 'ran').exists() and not (tmp_path / 'a').exists()
  assert cli.main(['import-torch', str(tmp_path / 'none.pt'), '--workdir',
                   str(tmp_path / 'b')]) == 1
  assert 'none.pt: no such file' in capsys.readouterr().err
  other = tmp_path / 'other.pt'
  torch.save({'backbone.0.weight': torch.zeros(4, 3, 3, 3)}, other)
  assert cli.main(['import-torch', str(other), '--workdir',
                   str(tmp_path / 'c')]) == 1
  assert "key 'backbone.0.weight' has no place" in capsys.readouterr().err


def test_bfloat16_compute_is_a_choice(released, tmp_path):
  _, path, _ = released
  workdir = str(tmp_path / 'bf16')
  assert cli.main(['import-torch', path, '--workdir', workdir,
                   '--compute-dtype', 'bfloat16']) == 0
  assert run_directory.load_config(workdir).compute_dtype == 'bfloat16'
  assert jax.tree.leaves(inference.Embedder.from_workdir(
      workdir).variables)[0].dtype == np.float32  # weights stay float32


def test_export_onnx_of_an_imported_run_equals_pytorch(released, tmp_path,
                                                       capsys):
  onnxruntime = pytest.importorskip('onnxruntime')
  net, _, workdir = released
  out = str(tmp_path / 'model.onnx')
  assert cli.main(['export-onnx', '--checkpoint', workdir, '--out', out]) == 0
  printed = capsys.readouterr().out
  assert 'checked with onnxruntime: max abs difference' in printed
  session = onnxruntime.InferenceSession(
      out, providers=['CPUExecutionProvider'])
  assert [i.name for i in session.get_inputs()] == ['data']
  # insightface feeds (x - 127.5) / 127.5 in NCHW, RGB.
  x = photos(seed=1).astype(np.float32) / 127.5 - 1
  theirs = session.run(None, {'data': x.transpose(0, 3, 1, 2)})[0]
  np.testing.assert_allclose(theirs, reference.embed(net, x), atol=1e-5)


def test_export_onnx_refusals(tmp_path, capsys):
  assert cli.main(['export-onnx', '--checkpoint', str(tmp_path / 'none'),
                   '--out', str(tmp_path / 'm.onnx')]) == 1
  assert 'no training config here' in capsys.readouterr().err


def test_import_onnx_of_an_exported_run_gives_the_same_embeddings(
    released, tmp_path):
  pytest.importorskip('onnx')
  _, _, workdir = released
  exported = str(tmp_path / 'model.onnx')
  assert cli.main(['export-onnx', '--checkpoint', workdir, '--out',
                   exported]) == 0
  again = str(tmp_path / 'again')
  assert cli.main(['import-onnx', exported, '--workdir', again]) == 0
  images = sources.InMemory(photos(seed=2), np.zeros(6, int))
  original = inference.Embedder.from_workdir(workdir).embed(
      images, progress=False)
  round_trip = inference.Embedder.from_workdir(again).embed(
      images, progress=False)
  np.testing.assert_allclose(round_trip, original, atol=1e-5)
  assert run_directory.load_config(again).imported.format == 'onnx'
