"""The device mesh and every partition rule, in one place.

facejax uses a 2-D mesh ``('data', 'model')``:

* the batch (images, labels, embeddings) is split over *all* devices,
  ``P(('data', 'model'))``: the backbone is data-parallel on every device;
* the class-weight matrix W (D, C) of the margin-softmax head is split by
  columns over ``'model'``, ``P(None, 'model')``: each device holds C / M
  classes (insightface's model-parallel "Partial FC" layout when the whole
  mesh is ``'model'``);
* everything else (backbone parameters, optimizer state) is replicated.

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
