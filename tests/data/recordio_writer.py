"""An independent writer of insightface's MXNet RecordIO (.rec + .idx).

It follows dmlc-core's ``RecordIOWriter::WriteRecord`` (split at 4-byte
aligned magic words, flags 1/2/3, zero padding) and MXNet's
``recordio.pack`` (IRHeader, ``flag`` extra float32 labels), and shares no
code with the reader in ``facejax.data.insightface``.
"""
import struct

MAGIC_WORD = struct.pack('<I', 0xced7230a)


def chunk(cflag, data):
  """One chunk: magic, lrecord = cflag << 29 | length, data, zero padding."""
  header = struct.pack('<II', 0xced7230a, (cflag << 29) | len(data))
  return header + data + b'\x00' * (-len(data) % 4)


def frame(payload):
  """All chunks of one record, as dmlc-core's RecordIOWriter writes them."""
  pieces, start = [], 0
  for i in range(0, len(payload) // 4 * 4, 4):
    if payload[i:i + 4] == MAGIC_WORD:
      pieces.append(payload[start:i])
      start = i + 4
  pieces.append(payload[start:])
  if len(pieces) == 1:
    return chunk(0, payload)
  flags = [1] + [2] * (len(pieces) - 2) + [3]
  return b''.join(chunk(f, p) for f, p in zip(flags, pieces))


def ir(label, image=b'', record_id=0, id2=0):
  """MXNet's recordio.pack: a number label, or a vector label with flag > 0."""
  if isinstance(label, (int, float)):
    return struct.pack('<IfQQ', 0, label, record_id, id2) + image
  vector = struct.pack(f'<{len(label)}f', *label)
  return (struct.pack('<IfQQ', len(label), 0.0, record_id, id2) + vector +
          image)


def write_rec(directory, payloads, keys=None, name='train', raw=None):
  """Writes a .rec (``raw`` bytes, or framed payloads) and its .idx."""
  keys = list(range(len(payloads))) if keys is None else keys
  offsets, data = [], b''
  for payload in payloads:
    offsets.append(len(data))
    data += frame(payload)
  rec, idx = directory / f'{name}.rec', directory / f'{name}.idx'
  rec.write_bytes(data if raw is None else raw)
  idx.write_text(''.join(f'{k}\t{o}\n' for k, o in zip(keys, offsets)))
  return rec, idx, offsets


def insightface_dataset(directory, labels, image_bytes, extra_labels=False):
  """Header (key 0), images (keys 1 .. n), one identity record per class."""
  n, classes = len(labels), max(labels) + 1
  first, end = n + 1, n + 1 + classes
  payloads = [ir((first, end))]
  for label, image in zip(labels, image_bytes):
    payloads.append(ir((label, 0.5, -3.0) if extra_labels else label, image,
                       record_id=len(payloads)))
  for c in range(classes):
    keys = [k + 1 for k in range(n) if labels[k] == c]
    payloads.append(ir((min(keys), max(keys) + 1)))
  return write_rec(directory, payloads)
