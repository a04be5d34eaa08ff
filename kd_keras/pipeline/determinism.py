"""Same config and seed, same numbers: TensorFlow's op determinism, on or off for a run.

With `deterministic: true` (the default) every op picks an implementation whose float sums run
in a fixed order, and `tf.data` keeps its element order, so two runs of one config and seed on
one machine write the same metrics and the same loss at every epoch
(`tf.config.experimental.enable_op_determinism`). `benchmarks/determinism_cost.py` measures
what it costs per training step; `deterministic: false` gives the faster, run-to-run varying
kernels back.
"""

from __future__ import annotations

import tensorflow as tf

from kd_keras.compat import disable_op_determinism, is_op_determinism_enabled


def set_determinism(enabled: bool) -> None:
    """Turns TensorFlow's op determinism on or off for the ops built from now on."""
    if enabled:
        tf.config.experimental.enable_op_determinism()
    elif is_op_determinism_enabled():
        disable_op_determinism()


__all__ = ["set_determinism"]
