"""The restricted reader of joblib array files: exact, and refuses code."""
import os
import pickle

import numpy as np
import pytest

from facejax.detection import joblib_arrays

joblib = pytest.importorskip('joblib')  # writes the files we read


def _arrays():
  rng = np.random.default_rng(0)
  return [rng.normal(size=(3, 3, 3, 10)).astype(np.float32),
          np.arange(7, dtype=np.int64),
          np.asfortranarray(rng.normal(size=(5, 4))),
          np.zeros((0, 4), np.float32),
          np.array(2.5, np.float32),
          np.array([True, False])]


@pytest.mark.parametrize('compress', [0, 'lz4'])
def test_reads_what_joblib_wrote(tmp_path, compress):
  # Files written here by joblib itself (trusted): bare and lz4, C and
  # Fortran order, every numeric dtype kind, empty and 0-d arrays.
  path = tmp_path / 'arrays.joblib'
  joblib.dump(_arrays(), path, compress=compress)
  read = joblib_arrays.read_array_list(path)
  assert len(read) == len(_arrays())
  for got, want in zip(read, _arrays()):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.flags.writeable


class _Exploit:
  """Unpickling this runs a shell command (the classic pickle attack)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('compress', [0, 'lz4'])
def test_refuses_a_file_that_would_run_code(tmp_path, compress):
  marker = tmp_path / 'ran'
  path = tmp_path / 'weights.lz4'
  # A weights list with the exploit hidden after a genuine array.
  joblib.dump([np.ones(3, np.float32), _Exploit(marker)], path,
              compress=compress)
  with pytest.raises(joblib_arrays.UnsafePickleError,
                     match=r'weights\.lz4: refused: .*posix\.system'):
    joblib_arrays.read_array_list(path)
  assert not marker.exists()


def test_refuses_every_unlisted_global_call_and_object_array(tmp_path):
  path = tmp_path / 'f.pkl'
  # numpy's own reconstructor (a plain np.save-less pickle of an array).
  path.write_bytes(pickle.dumps([np.ones(2)]))
  with pytest.raises(joblib_arrays.UnsafePickleError,
                     match='numpy.*_reconstruct'):
    joblib_arrays.read_array_list(path)
  # An object array is joblib's nested pickle: refused, not unpickled.
  joblib.dump([np.array([1, 'a'], dtype=object)], path)
  with pytest.raises(joblib_arrays.UnsafePickleError,
                     match="dtype\\('O'\\)"):
    joblib_arrays.read_array_list(path)
  # A builtin the file calls by name.
  path.write_bytes(b'\x80\x04cbuiltins\neval\n(V1+1\ntR.')
  with pytest.raises(joblib_arrays.UnsafePickleError,
                     match='builtins.eval'):
    joblib_arrays.read_array_list(path)


def test_garbage_truncated_and_oversized_files(tmp_path):
  path = tmp_path / 'w.lz4'
  joblib.dump(_arrays(), path, compress='lz4')
  data = path.read_bytes()
  path.write_bytes(b'not a pickle at all')
  with pytest.raises(pickle.UnpicklingError, match='not a readable'):
    joblib_arrays.read_array_list(path)
  bare = tmp_path / 'bare.joblib'
  joblib.dump(_arrays(), bare)
  bare.write_bytes(bare.read_bytes()[:300])
  with pytest.raises(pickle.UnpicklingError, match='truncated|readable'):
    joblib_arrays.read_array_list(bare)
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(pickle.UnpicklingError):
    joblib_arrays.read_array_list(path)
  path.write_bytes(data)
  with pytest.raises(pickle.UnpicklingError, match='larger than 100 bytes'):
    joblib_arrays.read_array_list(path, max_bytes=100)
  # A small file that decompresses past the limit (a zip bomb in miniature).
  lz4_frame = pytest.importorskip('lz4.frame')
  path.write_bytes(lz4_frame.compress(pickle.dumps([0] * 100_000)))
  with pytest.raises(pickle.UnpicklingError,
                     match='decompresses to more than 10000 bytes'):
    joblib_arrays.read_array_list(path, max_bytes=10_000)
  path.write_bytes(pickle.dumps({'not': 'a list'}))
  with pytest.raises(pickle.UnpicklingError, match='holds a dict'):
    joblib_arrays.read_array_list(path)


def test_reads_the_mtcnn_package_files():
  # The files the detector loads: three lists of float32 arrays.
  weights = pytest.importorskip('facejax.detection.weights')
  try:
    files = weights.package_weight_files()
  except weights.WeightsError:
    pytest.skip('mtcnn not installed')
  counts = {name: len(joblib_arrays.read_array_list(path))
            for name, path in files.items()}
  assert counts == {'pnet': 13, 'rnet': 16, 'onet': 21}
