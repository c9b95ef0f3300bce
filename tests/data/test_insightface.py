"""insightface's formats: MXNet RecordIO (.rec + .idx) and verification .bin.

The .rec files are written here by an independent writer that follows
dmlc-core's ``RecordIOWriter::WriteRecord`` (split at 4-byte aligned magic
words, flags 1/2/3, zero padding) and MXNet's ``recordio.pack`` (IRHeader,
``flag`` extra float32 labels); it shares no code with the reader. The .bin
files are real pickles of every protocol, Python 2 pickles written opcode by
opcode, and malicious pickles that must be refused without running anything.
"""
import os
import pickle
import struct
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest

from facejax.data import files
from facejax.data import insightface
from tests.data.recordio_writer import MAGIC_WORD, chunk, frame, ir
from tests.data.recordio_writer import insightface_dataset, write_rec
from tests.mutations import check_outcome, mutants


def images(count, seed=0):
  """Fake encoded images, of lengths 0 .. 9 (every padding)."""
  rng = np.random.default_rng(seed)
  return [b'\xff\xd8' * (i % 2) + rng.bytes(i % 8) for i in range(count)]


LABELS = [0, 0, 1, 2, 2, 2, 3, 4, 4]


# ------------------------------------------------------------- RecordIO.


@pytest.mark.parametrize('extra_labels', [False, True])
def test_round_trip_with_header(tmp_path, extra_labels):
  image_bytes = images(len(LABELS))
  rec, _, _ = insightface_dataset(tmp_path, LABELS, image_bytes, extra_labels)
  reader = insightface.RecordReader(rec)
  assert len(reader) == len(LABELS)
  assert reader.num_classes == 5
  assert reader.header.flag == 2
  expected = list(zip(LABELS, image_bytes))
  assert [reader[i] for i in range(len(LABELS))] == expected
  assert list(reader) == expected
  assert reader[-1] == expected[-1]
  assert reader[-len(LABELS)] == expected[0]
  assert reader[np.int64(2)] == expected[2]
  assert all(isinstance(label, int) for label, _ in reader)
  for bad in (len(LABELS), -len(LABELS) - 1):
    with pytest.raises(IndexError, match='out of range'):
      reader[bad]
  with pytest.raises(TypeError):
    reader[1.0]


def test_without_header_every_record_is_an_image(tmp_path):
  labels = [3, 1, 4, 1, 5]
  image_bytes = images(len(labels), seed=1)
  # Record 0 has flag 0, the others extra labels: still no header.
  payloads = [ir(labels[0], image_bytes[0])] + [
      ir((label, 9.0), image) for label, image in zip(labels[1:],
                                                       image_bytes[1:])]
  rec, idx, offsets = write_rec(tmp_path, payloads)
  reader = insightface.RecordReader(rec, idx)
  assert reader.num_classes is None and reader.header is None
  assert list(reader) == list(zip(labels, image_bytes))
  # Without a header the images follow the .idx's line order and keys.
  order = [2, 0, 4, 1, 3]
  idx.write_text(''.join(f'{10 + k}\t{offsets[k]}\n' for k in order))
  reader = insightface.RecordReader(rec, idx)
  assert list(reader) == [(labels[k], image_bytes[k]) for k in order]


def test_default_idx_path_and_repr(tmp_path):
  rec, _, _ = insightface_dataset(tmp_path, LABELS, images(len(LABELS)))
  reader = insightface.RecordReader(str(rec))
  assert reader.idx_path == str(tmp_path / 'train.idx')
  assert '9 images' in repr(reader) and 'num_classes=5' in repr(reader)


def test_record_with_magic_words_is_split_and_reassembled(tmp_path):
  image = MAGIC_WORD + b'abcd' + MAGIC_WORD + b'xy'  # aligned at 24 and 32
  payload = ir(7, image)
  framed = frame(payload)
  assert framed == (chunk(1, payload[:24]) + chunk(2, b'abcd') +
                    chunk(3, b'xy'))
  rec, _, _ = write_rec(tmp_path, [ir(1, b'j'), payload, ir(2, b'k')])
  reader = insightface.RecordReader(rec)
  assert list(reader) == [(1, b'j'), (7, image), (2, b'k')]
  assert list(insightface.iter_records(rec))[1] == payload


@pytest.mark.parametrize('payload, pieces', [
    (MAGIC_WORD + b'12', [(1, b''), (3, b'12')]),
    (b'1234' + MAGIC_WORD, [(1, b'1234'), (3, b'')]),
    (MAGIC_WORD, [(1, b''), (3, b'')]),
    (MAGIC_WORD * 3, [(1, b''), (2, b''), (2, b''), (3, b'')]),
    (b'1' + MAGIC_WORD + b'234', [(0, b'1' + MAGIC_WORD + b'234')]),
])
def test_split_edge_cases(tmp_path, payload, pieces):
  assert frame(payload) == b''.join(chunk(f, p) for f, p in pieces)
  rec, _, _ = write_rec(tmp_path, [b'ab', payload, b'c'])
  assert list(insightface.iter_records(rec)) == [b'ab', payload, b'c']


TOKENS = st.sampled_from(
    [MAGIC_WORD, b'\x00', b'ab', b'wxyz', MAGIC_WORD[:2], MAGIC_WORD[1:]])


@given(st.lists(st.lists(TOKENS, max_size=8).map(b''.join), max_size=5))
def test_any_payloads_round_trip(tmp_path_factory, payloads):
  directory = tmp_path_factory.mktemp('rec')
  rec, _, _ = write_rec(directory, payloads)
  assert list(insightface.iter_records(rec)) == payloads
  (directory / 'train.idx').unlink()
  assert insightface.build_idx(rec) == len(payloads)
  records = [ir(i, payload) for i, payload in enumerate(payloads)]
  rec, _, _ = write_rec(directory, [ir(0, b'')] + records, name='images')
  insightface.build_idx(rec, directory / 'built.idx')
  reader = insightface.RecordReader(rec, directory / 'built.idx')
  assert list(reader) == [(0, b'')] + list(enumerate(payloads))


def test_padding(tmp_path):
  payloads = [ir(k, b'z' * k) for k in range(8)]  # lengths 24 .. 31
  rec, _, offsets = write_rec(tmp_path, payloads)
  data = rec.read_bytes()
  assert len(data) == sum(8 + (len(p) + 3) // 4 * 4 for p in payloads)
  assert all(offset % 4 == 0 for offset in offsets)
  assert list(insightface.iter_records(rec)) == payloads
  assert list(insightface.RecordReader(rec)) == [
      (k, b'z' * k) for k in range(8)]


def test_build_idx_matches_and_refuses_to_overwrite(tmp_path):
  rec, idx, _ = insightface_dataset(tmp_path, LABELS, images(len(LABELS)))
  expected = idx.read_text()
  with pytest.raises(FileExistsError, match='train.idx'):
    insightface.build_idx(rec)
  assert insightface.build_idx(rec, overwrite=True) == len(LABELS) + 6
  assert idx.read_text() == expected
  assert sorted(os.listdir(tmp_path)) == ['train.idx', 'train.rec']


def test_bad_magic_names_file_and_offset(tmp_path):
  rec, idx, offsets = insightface_dataset(tmp_path, LABELS,
                                          images(len(LABELS)))
  data = bytearray(rec.read_bytes())
  data[offsets[3]] ^= 0xff
  rec.write_bytes(bytes(data))
  reader = insightface.RecordReader(rec)
  assert reader[1] == (LABELS[1], images(len(LABELS))[1])
  pattern = f'{rec}: bad magic number .* at byte offset {offsets[3]} '
  with pytest.raises(ValueError, match=pattern):
    reader[2]
  with pytest.raises(ValueError, match=pattern):
    list(insightface.iter_records(rec))
  # A wrong offset in the .idx reads the length word as the magic number.
  lines = idx.read_text().splitlines()
  lines[1] = f'1\t{offsets[1] + 4}'
  idx.write_text('\n'.join(lines))
  with pytest.raises(ValueError, match=f'byte offset {offsets[1] + 4} '):
    insightface.RecordReader(rec)[0]


def test_bad_magic_in_header_record(tmp_path):
  rec, _, _ = write_rec(tmp_path, [ir((2, 3)), ir(0, b'a')])
  rec.write_bytes(b'\x00' + rec.read_bytes()[1:])
  with pytest.raises(ValueError, match=f'{rec}: bad magic .* offset 0 '):
    insightface.RecordReader(rec)


@pytest.mark.parametrize('cut', [5, 13, 35])
def test_truncated_file_is_refused_when_opened(tmp_path, cut):
  payloads = [ir(0, b'first'), ir(1, b'second image')]
  rec, idx, offsets = write_rec(tmp_path, payloads)
  rec.write_bytes(rec.read_bytes()[:offsets[1] + cut])
  pattern = f'{rec}: truncated record at byte offset {offsets[1]}'
  if cut < 8:  # not even the chunk header is left
    pattern = (f'{idx}: key 1 has offset {offsets[1]}, past the last chunk '
               f'header that fits in {rec}')
  with pytest.raises(files.DataFileError, match=pattern):
    insightface.RecordReader(rec)
  with pytest.raises(ValueError, match=f'{rec}: truncated record at byte '
                     f'offset {offsets[1]}'):
    list(insightface.iter_records(rec))


def test_truncated_continuation_and_offset_past_end(tmp_path):
  payload = ir(4, MAGIC_WORD + b'tail')
  rec, idx, _ = write_rec(tmp_path, [payload])
  data = rec.read_bytes()
  rec.write_bytes(data[:8 + 24])  # the first part only
  with pytest.raises(ValueError, match='truncated record at byte offset 0'):
    insightface.RecordReader(rec)[0]
  rec.write_bytes(data)
  idx.write_text(f'0\t{len(data)}\n')
  with pytest.raises(files.DataFileError, match=f'{idx}: key 0 has offset '
                     f'{len(data)}, past the last chunk header'):
    insightface.RecordReader(rec)


@pytest.mark.parametrize('chunks, flag', [
    ([(2, b'abcd')], 2),
    ([(3, b'abcd')], 3),
    ([(1, b'abcd'), (0, b'efgh')], 0),
    ([(1, b'abcd'), (1, b'efgh')], 1),
    ([(5, b'abcd')], 5),
])
def test_bad_continuation_flags(tmp_path, chunks, flag):
  raw = b''.join(chunk(f, data) for f, data in chunks)
  rec, _, _ = write_rec(tmp_path, [], raw=raw)
  with pytest.raises(ValueError, match=f'{rec}: .*continuation flag {flag}'):
    list(insightface.iter_records(rec))


def test_malformed_idx_names_line(tmp_path, monkeypatch):
  rec, idx, offsets = write_rec(tmp_path, [ir(k, b'i') for k in range(6)])
  good = [f'{k}\t{o}' for k, o in enumerate(offsets)]
  idx.write_text('\n'.join(good[:2] + ['', '  '] + good[2:]) + '\n')
  assert len(insightface.RecordReader(rec)) == 6  # blank lines are skipped
  for bad in ('x\t40', '3', '3\t4\t5', '3\t4.5', '3:40'):
    lines = good[:2] + [''] + good[2:]
    lines[4] = bad
    idx.write_text('\n'.join(lines) + '\n')
    with pytest.raises(ValueError, match=f'{idx}: line 5 is '):
      insightface.RecordReader(rec)
  # Line numbers stay right when the .idx is parsed in several pieces.
  monkeypatch.setattr(insightface, '_IDX_CHUNK_BYTES', 8)
  with pytest.raises(ValueError, match=f'{idx}: line 5 is '):
    insightface.read_idx(idx)
  idx.write_text('\n'.join(good) + '\n')
  keys, read_offsets = insightface.read_idx(idx)
  assert keys.tolist() == list(range(6)) and read_offsets.tolist() == offsets
  idx.write_text('0\t-8\n')
  with pytest.raises(ValueError, match='key 0 has negative offset -8'):
    insightface.read_idx(idx)


SEPARATORS = st.sampled_from(['\t', ' ', '\t ', '  \t'])
ENDINGS = st.sampled_from(['\n', '\r\n', ' \n', '\n\n', '\n \n'])


@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1),
                          SEPARATORS, ENDINGS), max_size=12),
       st.booleans(), st.sampled_from([1, 7, 64, 1 << 22]))
def test_read_idx_any_layout(tmp_path_factory, lines, final_newline, chunk):
  text = ''.join(f'{k}{sep}{o}{end}' for k, o, sep, end in lines)
  if not final_newline:
    text = text.rstrip()
  idx = tmp_path_factory.mktemp('idx') / 'any.idx'
  idx.write_text(text)
  default = insightface._IDX_CHUNK_BYTES
  insightface._IDX_CHUNK_BYTES = chunk
  try:
    keys, offsets = insightface.read_idx(idx)
  finally:
    insightface._IDX_CHUNK_BYTES = default
  assert keys.dtype == offsets.dtype == np.int64
  assert keys.tolist() == [k for k, _, _, _ in lines]
  assert offsets.tolist() == [o for _, o, _, _ in lines]


@pytest.mark.parametrize('text, line', [
    ('0\t0\n1\t99999999999999999999\n', 2),  # beyond int64
    ('0\t0\n1\t-\n', 2),
    ('0\t0\n\n\n1\t\n', 4),
    ('\t5\n', 1),
])
def test_read_idx_rejects(tmp_path, text, line):
  idx = tmp_path / 'bad.idx'
  idx.write_text(text)
  with pytest.raises(ValueError, match=f'{idx}: line {line} is '):
    insightface.read_idx(idx)


def test_idx_inconsistent_with_header(tmp_path):
  rec, idx, _ = insightface_dataset(tmp_path, LABELS, images(len(LABELS)))
  lines = idx.read_text().splitlines()
  idx.write_text('\n'.join(lines[:4] + lines[5:]))
  with pytest.raises(ValueError, match='not in the index; the first is key 4'):
    insightface.RecordReader(rec)
  idx.write_text('\n'.join(lines + [lines[3]]))
  with pytest.raises(ValueError, match='key 3 appears more than once'):
    insightface.RecordReader(rec)


def test_bad_header_labels(tmp_path):
  rec, _, _ = write_rec(tmp_path, [ir((2, 1)), ir(0, b'a')])
  with pytest.raises(ValueError, match=r'\(2, 1\) has b < a'):
    insightface.RecordReader(rec)
  rec, _, _ = write_rec(tmp_path, [ir((0.5, 3)), ir(0, b'a')])
  with pytest.raises(ValueError, match='label 0.5 is not a record key'):
    insightface.RecordReader(rec)
  rec, _, _ = write_rec(tmp_path, [ir((2,)), ir(6, b'a')])  # one label
  reader = insightface.RecordReader(rec)
  assert list(reader) == [(6, b'a')] and reader.num_classes is None


def test_bad_image_records(tmp_path):
  short = struct.pack('<IfQQ', 3, 0.0, 0, 0) + b'\x00' * 8  # 2 of 3 labels
  rec, _, offsets = write_rec(
      tmp_path, [ir(0, b'a'), ir(1.5, b'b'), ir(-1, b'c'), short, b'tiny'])
  reader = insightface.RecordReader(rec)
  for index, message in [(1, 'label 1.5 is not'), (2, 'label -1.0 is not'),
                         (3, 'too short for its IRHeader with flag 3'),
                         (4, 'shorter than the 24-byte IRHeader')]:
    with pytest.raises(ValueError, match=f'{rec}: image record at byte '
                       f'offset {offsets[index]}: .*{message}'):
      reader[index]


def test_missing_files(tmp_path):
  rec, idx, _ = write_rec(tmp_path, [ir(0, b'a')])
  idx.unlink()
  with pytest.raises(FileNotFoundError,
                     match=r'\(\.idx\) file not found .*build_idx.*train\.idx'):
    insightface.RecordReader(rec)
  with pytest.raises(FileNotFoundError, match='missing.rec'):
    insightface.RecordReader(tmp_path / 'missing.rec', tmp_path / 'x.idx')
  with pytest.raises(FileNotFoundError, match='missing.rec'):
    list(insightface.iter_records(tmp_path / 'missing.rec'))
  with pytest.raises(FileNotFoundError, match='missing.idx'):
    insightface.read_idx(tmp_path / 'missing.idx')


def test_reader_pickles_and_reopens(tmp_path):
  image_bytes = images(len(LABELS))
  rec, _, _ = insightface_dataset(tmp_path, LABELS, image_bytes)
  with insightface.RecordReader(rec) as reader:
    assert reader[0] == (LABELS[0], image_bytes[0])  # the file is now open
    clone = pickle.loads(pickle.dumps(reader))
  assert clone.num_classes == 5
  assert list(clone) == list(zip(LABELS, image_bytes))
  assert list(reader) == list(zip(LABELS, image_bytes))  # reopened
  clone.close()


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
# The child only reads a file and exits: none of jax's or tensorflow's
# threads' locks are touched, so their warning about forking does not apply.
@pytest.mark.filterwarnings('ignore:os.fork')
def test_reader_after_fork(tmp_path):
  image_bytes = images(len(LABELS))
  rec, _, _ = insightface_dataset(tmp_path, LABELS, image_bytes)
  reader = insightface.RecordReader(rec)
  assert reader[0] == (LABELS[0], image_bytes[0])
  read_end, write_end = os.pipe()
  pid = os.fork()
  if pid == 0:  # the child: its own file, its own position
    try:
      ok = list(reader)[::-1] == list(zip(LABELS, image_bytes))[::-1]
      os.write(write_end, b'1' if ok else b'0')
    finally:
      os._exit(0)
  os.close(write_end)
  assert list(reader) == list(zip(LABELS, image_bytes))
  assert os.read(read_end, 1) == b'1'
  os.waitpid(pid, 0)
  os.close(read_end)


def test_imports_neither_tensorflow_nor_mxnet():
  code = ('import sys, facejax.data.insightface; print(sorted({m.split(".")[0]'
          ' for m in sys.modules} & {"tensorflow", "mxnet", "jax"}))')
  out = subprocess.run([sys.executable, '-c', code], check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == '[]'


# ----------------------------------------------------------- load_bin.

BINS = [b'\xff\xd8jpeg0', b'', bytes(range(256)), b'\x00' + MAGIC_WORD]
ISSAME = [True, False]


def write(tmp_path, data, name='lfw.bin'):
  path = tmp_path / name
  path.write_bytes(data)
  return path


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize('issame', [
    ISSAME, tuple(ISSAME), np.array(ISSAME), list(np.array(ISSAME))],
                         ids=['list', 'tuple', 'array', 'numpy_bools'])
def test_load_bin_round_trip(tmp_path, protocol, issame):
  path = write(tmp_path, pickle.dumps((BINS, issame), protocol=protocol))
  bins, loaded = insightface.load_bin(path)
  assert bins == BINS and all(type(b) is bytes for b in bins)
  assert loaded.dtype == bool and loaded.tolist() == ISSAME


def test_load_bin_empty_and_larger(tmp_path):
  path = write(tmp_path, pickle.dumps(([], np.zeros(0, bool)), protocol=2))
  bins, issame = insightface.load_bin(path)
  assert bins == [] and issame.shape == (0,)
  rng = np.random.default_rng(0)
  issame = rng.random(3000) < 0.5
  bins = [rng.bytes(int(n)) for n in rng.integers(0, 64, 6000)]
  for protocol in (2, 4, 5):
    path = write(tmp_path, pickle.dumps((bins, issame), protocol=protocol))
    loaded_bins, loaded = insightface.load_bin(path)
    assert loaded_bins == bins and np.array_equal(loaded, issame)


# Python 2 pickles, opcode by opcode: images are str (SHORT_BINSTRING 'U',
# STRING 'S'), read back as bytes.
PY2_PROTOCOL_2 = (
    b'\x80\x02]q\x01(U\x05ab\xffcdU\x00U\x02\x00\x01U\x01ze'
    b']q\x02(\x88\x89e\x86q\x03.')
PY2_PROTOCOL_0 = (
    b"((lp0\nS'ab\\xffcd'\np1\naS''\np2\naS'\\x00\\x01'\np3\naS'z'\np4\na"
    b'(lp5\nI01\naI00\natp6\n.')
NEW_ARRAY = (b'cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\n'
             b'q\x02K\x00\x85U\x01b\x87Rq\x03')
NEW_DTYPE = b'cnumpy\ndtype\nq\x04U\x02b1K\x00K\x01\x87Rq\x05'
BOOL_DTYPE = NEW_DTYPE + (b'(K\x03U\x01|NNNJ\xff\xff\xff\xff'
                          b'J\xff\xff\xff\xffK\x00tb')
ARRAY_STATE = b'(K\x01K\x02\x85' + BOOL_DTYPE + b'K\x00U\x02\x01\x00tb'
# numpy.array([True, False]) pickled by Python 2's numpy:
PY2_NUMPY_ARRAY = NEW_ARRAY + ARRAY_STATE
PY2_WITH_ARRAY = (
    b'\x80\x02]q\x00(U\x05ab\xffcdU\x00U\x02\x00\x01U\x01ze' +
    PY2_NUMPY_ARRAY + b'\x86.')


@pytest.mark.parametrize('data', [PY2_PROTOCOL_2, PY2_PROTOCOL_0,
                                  PY2_WITH_ARRAY],
                         ids=['protocol2', 'protocol0', 'numpy_array'])
def test_load_bin_python2_pickles(tmp_path, data):
  bins, issame = insightface.load_bin(write(tmp_path, data))
  assert bins == [b'ab\xffcd', b'', b'\x00\x01', b'z']
  assert issame.dtype == bool and issame.tolist() == ISSAME


class Evil:
  """Runs ``command`` when unpickled by an ordinary unpickler."""

  def __init__(self, function, argument):
    self.function, self.argument = function, argument

  def __reduce__(self):
    return self.function, (self.argument,)


def refused(tmp_path, data, name):
  path = write(tmp_path, data)
  with pytest.raises(insightface.RefusedPickleError,
                     match=f'{path}: .*{name}') as info:
    insightface.load_bin(path)
  assert isinstance(info.value, pickle.UnpicklingError)
  assert isinstance(info.value, ValueError)


@pytest.mark.parametrize('protocol', [0, 2, 5])
def test_load_bin_refuses_code(tmp_path, protocol):
  marker = tmp_path / 'PWNED'
  system = Evil(os.system, f'touch {marker}')
  refused(tmp_path, pickle.dumps(([b'a', system], ISSAME[:1]), protocol),
          r'refusing global (posix|nt)\.system')
  evaluate = Evil(eval, f'open({str(marker)!r}, "w")')
  refused(tmp_path, pickle.dumps((evaluate, ISSAME), protocol),
          r'refusing global (builtins|__builtin__)\.eval')
  popen = Evil(subprocess.Popen, ['touch', str(marker)])
  refused(tmp_path, pickle.dumps(([], [popen]), protocol),
          r'refusing global (subprocess|commands)\.Popen')
  assert not marker.exists()


def test_load_bin_refuses_python2_eval(tmp_path):
  marker = tmp_path / 'PWNED'
  data = (b"c__builtin__\neval\n(S'open(%r, \"w\")'\ntR." %
          str(marker).encode())
  refused(tmp_path, data, r'refusing global __builtin__\.eval')
  assert not marker.exists()


@pytest.mark.parametrize('protocol', [2, 4, 5])
@pytest.mark.parametrize('issame, dtype', [
    (np.array([b'a', None], dtype=object), "'O8'"),
    (np.array([1, 0]), "'i8'"),
    (np.array([1.0, 0.0], dtype=np.float32), "'f4'"),
])
def test_load_bin_refuses_other_dtypes(tmp_path, protocol, issame, dtype):
  refused(tmp_path, pickle.dumps((BINS, issame), protocol=protocol),
          f'numpy dtype {dtype}: only bool')


@pytest.mark.parametrize('data, message', [
    (b'\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib'
     b'\x86R.', "encoding 'zlib'"),
    (b'\x80\x02c__builtin__\nbytes\nK\x80\x85R.', r'bytes\(\) with argum'),
    (b'\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\ndtype\n'
     b'K\x00\x85U\x01b\x87R.', 'a type other than numpy.ndarray'),
    (b'\x80\x02cnumpy\nndarray\n)R.', 'calling numpy.ndarray'),
    # BUILD on a stand-in, to change what it calls:
    (b'\x80\x02c_codecs\nencode\n}X\x06\x00\x00\x00targetK\x01sb.',
     'setting the state of _Global'),
    (b'\x80\x02c_codecs\nencode\nN}X\x06\x00\x00\x00targetK\x01s\x86b.',
     'setting the state of _Global'),
    # Bool arrays and scalars that do not add up.
    (PY2_NUMPY_ARRAY.replace(b'K\x01K\x02\x85', b'K\x01K\x03\x85') + b'.',
     r'shape \(3,\) with 2 data bytes'),
    (NEW_ARRAY + ARRAY_STATE.replace(b'K\x02\x85', b'U\x01x') + b'.',
     "bad numpy array shape b'x'"),
    (NEW_ARRAY + ARRAY_STATE.replace(BOOL_DTYPE, b'K\x05') + b'.',
     'numpy array without a bool dtype'),
    (NEW_ARRAY + ARRAY_STATE.replace(b'U\x02\x01\x00', b']') + b'.',
     'numpy array data of type list'),
    (NEW_ARRAY + b'(K\x01tb.', 'unexpected numpy array state'),
    (PY2_NUMPY_ARRAY + ARRAY_STATE + b'.', 'set up twice'),
    (NEW_DTYPE + b'K\x03b.', 'numpy dtype state is not a tuple'),
    (b'cnumpy._core.multiarray\nscalar\n' + BOOL_DTYPE + b'U\x02ab\x86R.',
     'only bool scalars'),
])
def test_load_bin_refuses_crafted_pickles(tmp_path, data, message):
  refused(tmp_path, data, message)
  # The stand-ins are unchanged for the next file.
  path = write(tmp_path, pickle.dumps((BINS, np.array(ISSAME)), protocol=2),
               'next.bin')
  assert insightface.load_bin(path)[0] == BINS


@pytest.mark.parametrize('loaded, message', [
    ((BINS[:3] + [7], ISSAME), r'bins\[3\] has type int, expected bytes'),
    ((BINS, ISSAME + [True]), r'4 images for 3 pairs, expected 6'),
    ((BINS[:3], np.array([True])), r'3 images for 1 pairs'),
    ((BINS, [True, 1]), r'issame\[1\] has type int, expected bool'),
    ((BINS, np.array([[True, False]])), 
     'issame is a bool array of shape .*, expected a 1-D'),
    ((BINS, 'yes'), 'issame has type str'),
    ((b'abcd', ISSAME), 'bins has type bytes'),
    ((BINS, ISSAME, ISSAME), r'expected a pickled \(bins, issame\) pair'),
    ([BINS], r'expected a pickled \(bins, issame\) pair'),
])
def test_load_bin_checks_structure(tmp_path, loaded, message):
  path = write(tmp_path, pickle.dumps(loaded, protocol=4))
  with pytest.raises(ValueError, match=f'{path}: {message}'):
    insightface.load_bin(path)


@pytest.mark.parametrize('data', [
    b'', b'not a pickle', pickle.dumps((BINS, ISSAME), protocol=4)[:-9]])
def test_load_bin_not_a_pickle(tmp_path, data):
  path = write(tmp_path, data)
  with pytest.raises(ValueError, match=f'{path}: not a valid verification'):
    insightface.load_bin(path)


def test_load_bin_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.bin'):
    insightface.load_bin(tmp_path / 'missing.bin')


@pytest.mark.parametrize('extra_labels', [False, True])
def test_labels_reads_every_image_label(tmp_path, extra_labels):
  image_bytes = images(len(LABELS))
  rec, _, _ = insightface_dataset(tmp_path, LABELS, image_bytes, extra_labels)
  labels = insightface.RecordReader(rec).labels()
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(labels, LABELS)


def test_labels_names_a_bad_label(tmp_path):
  rec, _, offsets = write_rec(tmp_path, [ir(0, b'a'), ir(-2.0, b'b')])
  with pytest.raises(ValueError, match=f'offset {offsets[1]}.*-2'):
    insightface.RecordReader(rec).labels()


# ---------------------------------- what the RecordIO format promises.

# 32 images of 8 identities: keys 1 .. 32, identity records 33 .. 40.
EIGHT_BY_FOUR = [c for c in range(8) for _ in range(4)]


def distinct_images(count):
  """Non-empty fake images, each unlike the others."""
  return [b'\xff\xd8image%03d' % i + bytes(i % 4) for i in range(count)]


def dataset_lines(tmp_path, labels=EIGHT_BY_FOUR):
  rec, idx, offsets = insightface_dataset(tmp_path, labels,
                                          distinct_images(len(labels)))
  return rec, idx, offsets, idx.read_text().splitlines()


def test_index_that_lost_its_header_line_is_refused(tmp_path):
  rec, idx, _, lines = dataset_lines(tmp_path)
  assert len(insightface.RecordReader(rec)) == 32
  idx.write_text('\n'.join(lines[1:]) + '\n')  # 40 "images", 30 "classes"
  with pytest.raises(files.DataFileError,
                     match=f'{idx}: there is no line for key 0, .* the last '
                     r'key, 40 .* is an insightface identity record \(label '
                     r'\(29, 33\), no image\): the index lost its header'):
    insightface.RecordReader(rec)


def test_header_record_that_lost_its_flag_is_refused(tmp_path):
  rec, idx, _, _ = dataset_lines(tmp_path)
  data = bytearray(rec.read_bytes())
  data[8:12] = struct.pack('<I', 0)  # the header's IRHeader.flag
  rec.write_bytes(bytes(data))
  with pytest.raises(files.DataFileError,
                     match=f"{idx}: key 0's record is not a dataset header "
                     r'\(flag 0\), .* key, 40 .*identity record'):
    insightface.RecordReader(rec)


def test_plain_records_with_vector_labels_are_not_identity_records(tmp_path):
  # Two labels that look like a key range, but with an image: an image.
  payloads = [ir((3, 4), b'a'), ir((1, 2), b'b'), ir((1, 2), b'c')]
  rec, _, _ = write_rec(tmp_path, payloads, keys=[5, 6, 7])
  assert list(insightface.RecordReader(rec)) == [(3, b'a'), (1, b'b'),
                                                  (1, b'c')]


def test_duplicate_offsets_are_refused(tmp_path):
  rec, idx, offsets, lines = dataset_lines(tmp_path)
  lines[4] = f'4\t{offsets[3]}'  # key 4 at key 3's record; key 4's unread
  idx.write_text('\n'.join(lines) + '\n')
  with pytest.raises(files.DataFileError,
                     match=f'{idx}: keys 3 and 4 both have offset '
                     f'{offsets[3]}: one record would be read twice'):
    insightface.RecordReader(rec)


def test_empty_index_is_refused(tmp_path):
  rec, idx, _, _ = dataset_lines(tmp_path)
  for text in ('', '\n\n  \n'):
    idx.write_text(text)
    with pytest.raises(files.DataFileError,
                       match=f'{idx}: empty index: .* no record of {rec}'):
      insightface.RecordReader(rec)


@pytest.mark.parametrize('offset, problem', [
    (2**62, 'past the last chunk header that fits in'),
    (2**63 - 1, 'past the last chunk header that fits in'),
    (6, 'not a multiple of 4'),
])
def test_offsets_outside_the_rec_or_between_records_are_refused(
    tmp_path, offset, problem):
  rec, idx, _, lines = dataset_lines(tmp_path)
  lines[3] = f'3\t{offset}'
  idx.write_text('\n'.join(lines) + '\n')
  with pytest.raises(files.DataFileError,
                     match=f'{idx}: key 3 has offset {offset}, {problem}'):
    insightface.RecordReader(rec)


@pytest.mark.parametrize('bad, message', [
    (b'3\t\xc3(', r'line 4 is not UTF-8 text'),
    ('3\té'.encode(), r"line 4 is '3\\té', expected"),
    (b'3\t\xff12', r'line 4 is not UTF-8 text'),
    ('3\t١٢'.encode(), r"line 4 is '3\\t١٢', expected"),
    (b'-3\t12', 'line 4: key -3 is negative'),
    (b'3\t1_2', r"line 4 is '3\\t1_2', expected"),
])
def test_idx_lines_that_are_not_two_ascii_numbers(tmp_path, bad, message):
  rec, idx, _, lines = dataset_lines(tmp_path)
  data = [line.encode() for line in lines]
  data[3] = bad
  idx.write_bytes(b'\n'.join(data) + b'\n')
  with pytest.raises(files.DataFileError, match=f'{idx}: {message}'):
    insightface.RecordReader(rec)


def test_header_range_is_checked_against_the_records(tmp_path):
  rec, _, _, _ = dataset_lines(tmp_path)
  data = rec.read_bytes()

  def with_header(first):
    # The header record is 8 + 24 + 8 bytes at offset 0; a = its label[0].
    rec.write_bytes(data[:32] + struct.pack('<f', first) + data[36:])

  with_header(35.0)  # images 1 .. 34 would take in two identity records
  with pytest.raises(files.DataFileError,
                     match=f'{rec}: the header record .* keys 1 .. 34, but '
                     r'key 34 .* is an identity record \(label \(5, 9\)'):
    insightface.RecordReader(rec)
  with_header(30.0)  # images 1 .. 29 would leave out three images
  with pytest.raises(files.DataFileError,
                     match=f'{rec}: the header record .* identity records at'
                     ' keys 30 .. 40, but key 30 .* holds an image of'):
    insightface.RecordReader(rec)
  with_header(33.0)
  assert len(insightface.RecordReader(rec)) == 32


def test_wrong_offset_read_names_the_index(tmp_path):
  rec, idx, offsets, lines = dataset_lines(tmp_path)
  lines[3] = f'3\t{offsets[3] + 12}'  # inside record 3: no magic number
  idx.write_text('\n'.join(lines) + '\n')
  reader = insightface.RecordReader(rec)
  with pytest.raises(files.DataFileError,
                     match=f'{rec}: bad magic .* offset {offsets[3] + 12} .*'
                     f'a wrong offset in {idx}'):
    reader[2]
  with pytest.raises(files.DataFileError, match=f'wrong offset in {idx}'):
    reader.labels()


# ------------------------------------------ .bin length fields and memo.


@pytest.mark.parametrize('data', [
    b'\x80\x04\x8e' + struct.pack('<Q', 2**36) + b'abc.',  # BINBYTES8
    b'\x80\x05\x96' + struct.pack('<Q', 2**36) + b'abc.',  # BYTEARRAY8
    b'\x80\x04\x8d' + struct.pack('<Q', 2**36) + b'abc.',  # BINUNICODE8
    b'\x80\x04\x8e' + struct.pack('<Q', 2**63 + 5) + b'abc.',
    b'\x80\x04\x8d' + struct.pack('<Q', 2**64 - 1) + b'abc.',
    b'\x80\x02B' + struct.pack('<I', 2**32 - 1) + b'abc.',  # BINBYTES
    b'\x80\x02T' + struct.pack('<i', -5) + b'abc.',  # BINSTRING
    b'\x80\x02\x8b' + struct.pack('<i', 2**31 - 1) + b'\x01.',  # LONG4
    b'\x80\x04\x95' + struct.pack('<Q', 2**40) + b'N.',  # FRAME
    b'\x80\x02Nr' + struct.pack('<I', 2**31) + b'.',  # LONG_BINPUT
    b'(lp9999999999\n.',  # PUT
    b'\x80\x02N',  # no STOP
    b'\x80\x02\xff.',  # no such opcode
])
def test_load_bin_length_fields_larger_than_the_file(tmp_path, data):
  path = write(tmp_path, data)
  with pytest.raises(files.DataFileError,
                     match=f'{path}: not a valid verification .bin pickle'):
    insightface.load_bin(path)


def test_load_bin_empty_array_of_huge_side(tmp_path):
  huge = PY2_NUMPY_ARRAY.replace(b'K\x01K\x02\x85', b'K\x01\x8a\x09' +
                                 (2**64).to_bytes(9, 'little') + b'K\x00\x86')
  path = write(tmp_path, huge.replace(b'U\x02\x01\x00', b'U\x00') + b'.')
  with pytest.raises(insightface.RefusedPickleError,
                     match=f'{path}: bad numpy array shape'):
    insightface.load_bin(path)


def test_load_bin_folder(tmp_path):
  with pytest.raises(files.DataFileError, match=f'{tmp_path}: is a folder'):
    insightface.load_bin(tmp_path)


# ------------------------------------------------------------------ fuzz.
# Seeded mutants of small valid files: each parse either succeeds with what
# the file says, or raises the documented error naming the file.


def test_fuzz_idx(tmp_path):
  labels = [0, 0, 1, 2, 2, 3, 4, 4, 4]
  image_bytes = distinct_images(len(labels))
  rec, idx, _ = insightface_dataset(tmp_path, labels, image_bytes)
  expected = (len(labels), 5, list(zip(labels, image_bytes)))
  mutated = tmp_path / 'mutated.idx'

  def parse():
    reader = insightface.RecordReader(rec, mutated)
    return len(reader), reader.num_classes, list(reader)

  def check(result):
    # The header is in the .rec, untouched: the same images, once each.
    assert result == expected

  outcomes = []
  for mutant in mutants(idx.read_bytes(), 300, seed=1):
    mutated.write_bytes(mutant)
    outcomes.append(check_outcome(parse, mutated, files.DataFileError, check))
  assert 20 < outcomes.count('ok') < 280, outcomes.count('ok')


def test_fuzz_rec_header_records(tmp_path):
  labels = [0, 0, 1, 2, 2, 3, 4, 4, 4]
  image_bytes = distinct_images(len(labels))
  rec, idx, offsets = insightface_dataset(tmp_path, labels, image_bytes)
  data = rec.read_bytes()
  # Mutants of the header record and the identity records; the images
  # between them are kept as written.
  images_start, images_end = offsets[1], offsets[len(labels) + 1]
  images = data[images_start:images_end]
  mutated = tmp_path / 'mutated.rec'

  def parse():
    reader = insightface.RecordReader(mutated, idx)
    return reader, reader.labels(), list(reader)

  def check(result):
    reader, read_labels, items = result
    header = reader.header
    assert header is not None and header.flag >= 2
    first, end = int(header.label[0]), int(header.label[1])
    assert len(items) == first - 1 and reader.num_classes == end - first
    assert read_labels.tolist() == [label for label, _ in items]
    assert items == list(zip(labels, image_bytes))

  outcomes = []
  for mutant in mutants(data[:images_start] + data[images_end:], 250,
                        seed=2):
    mutated.write_bytes(mutant[:images_start] + images +
                        mutant[images_start:])
    outcomes.append(check_outcome(parse, mutated, files.DataFileError, check))
  assert 20 < outcomes.count('ok') < 230, outcomes.count('ok')


def test_fuzz_load_bin(tmp_path):
  rng = np.random.default_rng(0)
  # Images with newlines and quotes, which protocol 0 escapes.
  bins = [rng.bytes(6) + b"\n'" + bytes([i]) for i in range(6)]
  issame = [True, False, True]
  mutated = tmp_path / 'mutated.bin'

  def check(result):
    loaded_bins, loaded_issame = result
    assert all(type(image) is bytes for image in loaded_bins)
    assert loaded_issame.dtype == bool and loaded_issame.ndim == 1
    assert len(loaded_bins) == 2 * len(loaded_issame)

  outcomes = []
  for protocol in (0, 2, 4):
    written = (bins, issame if protocol == 0 else np.array(issame))
    data = pickle.dumps(written, protocol=protocol)
    for mutant in mutants(data, 100, seed=protocol):
      mutated.write_bytes(mutant)
      outcomes.append(check_outcome(lambda: insightface.load_bin(mutated),
                                    mutated, files.DataFileError, check))
  assert 5 < outcomes.count('ok') < 250, outcomes.count('ok')
