"""Cost of each loss's jitted value-and-gradient, relative to plain softmax.

    python -m bench.losses [--identities 64] [--images 4] [--dim 512]
                           [--classes 10000] [--repeats 20]

Prints, for every loss of the library on one P x K batch, the median wall time
of a compiled value-and-gradient call and its ratio to the plain softmax
cross-entropy (x @ W) measured in the same run. Quote the ratios, not the
absolute times: the machines are shared and noisy.
"""
import argparse
import statistics
import time

import jax

from train import loss_demo


def interleaved_median_seconds(calls, repeats):
  """Median time of each ``(compiled, inputs)``, timed round-robin.

  Round-robin order spreads the machine's load drift over every case alike,
  so the ratios between them stay meaningful on a shared machine.
  """
  for compiled, inputs in calls:  # compile and warm up
    jax.block_until_ready(compiled(*inputs))
  times = [[] for _ in calls]
  for _ in range(repeats):
    for (compiled, inputs), case_times in zip(calls, times):
      start = time.perf_counter()
      jax.block_until_ready(compiled(*inputs))
      case_times.append(time.perf_counter() - start)
  return [statistics.median(case_times) for case_times in times]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--identities', type=int, default=64)
  parser.add_argument('--images', type=int, default=4)
  parser.add_argument('--dim', type=int, default=512)
  parser.add_argument('--classes', type=int, default=10000)
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args(argv)

  cases = loss_demo.loss_cases(jax.random.PRNGKey(0), args.identities,
                               args.images, args.dim, args.classes)
  device = jax.devices()[0]
  print(f'device: {device.platform} ({device.device_kind}); batch '
        f'{args.identities}x{args.images}, dim {args.dim}, classes '
        f'{args.classes}; median of {args.repeats}')
  print(f'{"loss":<26} {"ms":>9} {"x softmax":>10}')
  calls = [(jax.jit(jax.value_and_grad(
      loss_fn, argnums=tuple(range(len(inputs))))), inputs)
           for _, loss_fn, inputs in cases]
  medians = interleaved_median_seconds(calls, args.repeats)
  baseline = medians[0]  # the first case is plain softmax
  for (name, _, _), seconds in zip(cases, medians):
    print(f'{name:<26} {1e3 * seconds:>9.2f} {seconds / baseline:>10.2f}')


if __name__ == '__main__':
  main()
