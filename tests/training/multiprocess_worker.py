"""One process of the multi-process training test (run by the test).

    python -m tests.training.multiprocess_worker PORT NUM_PROCESSES ID WORKDIR OUT

Trains the tiny config for 3 steps; process 0 writes every parameter to
OUT (an .npz) for the test to compare.
"""
import sys

import jax
import numpy as np

from facejax.training import distributed
from facejax.training import loop
from tests.training.tiny import tiny_config


def main(port, num_processes, process_id, workdir, out):
  if num_processes > 1:
    distributed.initialize(f'localhost:{port}', num_processes, process_id)
  assert jax.process_count() == num_processes
  run = loop.train(tiny_config(total_steps=3, checkpoint_every=3),
                   str(workdir), log=False)
  leaves = [np.asarray(x.addressable_data(0))
            for x in jax.tree.leaves(run.state.params)]
  assert all(x.is_fully_replicated for x in jax.tree.leaves(
      run.state.params))
  if jax.process_index() == 0:
    np.savez(out, *leaves, losses=[h['loss'] for h in run.history])


if __name__ == '__main__':
  port, count, index = map(int, sys.argv[1:4])
  main(port, count, index, sys.argv[4], sys.argv[5])
