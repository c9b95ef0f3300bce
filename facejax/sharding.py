"""The device mesh and every partition rule, in one place.

facejax uses a 2-D mesh ``('data', 'model')``:

* the batch (images, labels, embeddings) is split over *all* devices,
  ``P(('data', 'model'))``: the backbone is data-parallel on every device;
* the class-weight matrix W (D, C) of the margin-softmax head is split by
  columns over ``'model'``, ``P(None, 'model')``: each device holds C / M
  classes (insightface's model-parallel "Partial FC" layout when the whole
  mesh is ``'model'``);
* everything else (backbone parameters, optimizer state) is replicated,
  unless the backbone is fully sharded (``mesh.shard_backbone``, FSDP or
  ZeRO-3): then each large backbone parameter and its optimizer state are
  split over every device along their largest divisible axis
  (:func:`fully_sharded_spec`), and XLA gathers them where the forward and
  backward passes need them.

``data=N, model=1`` is plain data parallelism with W replicated;
``data=1, model=N`` splits W over every device, as arcface_torch does.
Models and losses never name devices; only the class-parallel head
(:mod:`facejax.losses.class_parallel`) uses collectives.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = 'data'
MODEL = 'model'
BATCH_SPEC = P((DATA, MODEL))
CLASS_WEIGHT_SPEC = P(None, MODEL)


def make_mesh(data=None, model=1, devices=None):
  """A ``('data', 'model')`` mesh of explicit axes over ``devices``.

  Args:
    data: size of the data axis (default: all devices / ``model``).
    model: size of the model (class) axis.
    devices: default ``jax.devices()``.

  Raises:
    ValueError: ``data * model`` is not the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  if model < 1 or len(devices) % model:
    raise ValueError(f'mesh model={model} does not divide the '
                     f'{len(devices)} devices')
  data = len(devices) // model if data is None else data
  if data * model != len(devices):
    raise ValueError(f'mesh data={data} x model={model} is not the '
                     f'{len(devices)} devices')
  return jax.make_mesh((data, model), (DATA, MODEL),
                       axis_types=(jax.sharding.AxisType.Explicit,) * 2,
                       devices=devices)


def batch_sharding(mesh):
  """The batch axis split over every device of the mesh."""
  return NamedSharding(mesh, BATCH_SPEC)


def class_weight_sharding(mesh):
  """W (D, C) split by class columns over the model axis."""
  return NamedSharding(mesh, CLASS_WEIGHT_SPEC)


def replicated(mesh):
  return NamedSharding(mesh, P())


# Parameters smaller than this stay replicated when the backbone is fully
# sharded: gathering them would cost more than the memory it saves.
FULLY_SHARDED_MIN_SIZE = 2 ** 14


def fully_sharded_spec(shape, num_devices, min_size=None):
  """FSDP's spec of one parameter: its largest axis that ``num_devices``
  divides split over both mesh axes, or ``P()`` (replicated) when it is
  smaller than ``min_size`` (default ``FULLY_SHARDED_MIN_SIZE``) elements
  or no axis divides."""
  if min_size is None:
    min_size = FULLY_SHARDED_MIN_SIZE
  size = 1
  for extent in shape:
    size *= extent
  if num_devices == 1 or size < min_size:
    return P()
  divisible = [axis for axis, extent in enumerate(shape)
               if extent % num_devices == 0]
  if not divisible:
    return P()
  axis = max(divisible, key=lambda a: (shape[a], a))
  return P(*([None] * axis + [(DATA, MODEL)]))
