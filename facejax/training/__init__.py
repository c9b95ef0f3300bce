"""The training engine: state, step, checkpoints, loop."""
