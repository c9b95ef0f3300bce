"""The model zoo's size and cost table, computed from the code.

    python -m bench.models [--markdown]

For every registered backbone: parameters (from ``jax.eval_shape`` of its
``init``, no compute) and forward multiply-accumulates per image
(``facejax.models.counting.count_macs``) at its paper's input size and at
112x112. This prints the table the README carries.
"""
import argparse


from facejax import models
from facejax.models import counting

# (registry name, keyword arguments, paper input (H, W), source)
ROWS = (
    ('iresnet18', {}, (112, 112), 'Deng et al., ArcFace, CVPR 2019'),
    ('iresnet34', {}, (112, 112), 'Deng et al., ArcFace, CVPR 2019'),
    ('iresnet50', {}, (112, 112), 'Deng et al., ArcFace, CVPR 2019'),
    ('iresnet100', {}, (112, 112), 'Deng et al., ArcFace, CVPR 2019'),
    ('iresnet200', {}, (112, 112), 'Deng et al., ArcFace, CVPR 2019'),
    ('mobilefacenet', {}, (112, 112), 'Chen et al., MobileFaceNets, 2018'),
    ('mobilefacenet', {'embedding_dim': 128}, (112, 112),
     'Chen et al., MobileFaceNets, 2018'),
    ('mobilefacenet_mbf', {}, (112, 112),
     "insightface's MBF (arcface_torch get_mbf, scale 2)"),
    ('sphereface20', {}, (112, 96), 'Liu et al., SphereFace, CVPR 2017'),
    ('center_loss_cnn', {}, (112, 96), 'Wen et al., center loss, ECCV 2016'),
    ('deepid2', {}, (55, 47), 'Sun et al., DeepID2, NIPS 2014'),
    ('vgg_face', {}, (224, 224), 'Parkhi et al., Deep Face Recognition, '
     'BMVC 2015'),
)


def table_rows():
  """(name, embedding, parameters, paper input, GMACs there, GMACs 112x112)."""
  for name, kwargs, (height, width), source in ROWS:
    model = models.get(name, **kwargs)
    label = name + ''.join(f' ({k}={v})' for k, v in kwargs.items())
    count, macs = counting.count(model, (1, height, width, 3))
    macs112 = (macs if (height, width) == (112, 112) else
               counting.count_macs(model, (1, 112, 112, 3)))
    yield (label, model.embedding_dim, count, f'{height}x{width}',
           macs / 1e9, macs112 / 1e9, source)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--markdown', action='store_true')
  args = parser.parse_args(argv)
  header = ('model', 'embedding', 'parameters (paper input)', 'paper input',
            'GMACs (paper input)', 'GMACs at 112x112', 'source')
  if args.markdown:
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
  for label, dim, count, size, macs, macs112, source in table_rows():
    if args.markdown:
      print(f'| `{label}` | {dim} | {count:,} | {size} | {macs:.3f} | '
            f'{macs112:.3f} | {source} |')
    else:
      print(f'{label:<34} {dim:>5} {count:>13,} {size:>8} {macs:>8.3f} '
            f'{macs112:>8.3f}  {source}')


if __name__ == '__main__':
  main()
