"""Training on several devices or machines: `tf.distribute` strategies by name.

    none         the default strategy: one device
    mirrored     `MirroredStrategy`: every local device (GPUs, or the CPU), one process
    multiworker  `MultiWorkerMirroredStrategy`: one process per worker, described by the
                 `TF_CONFIG` environment variable (`cluster.worker` addresses, `task.index`)

Each worker runs the same pipeline on the same data; a training step averages the gradients of
all replicas over the global batch, so the batch size, learning rate and results are those of one
worker. Worker 0 is the chief: it writes the output folder and records the run; the others write
to `<output_dir>/worker_<index>`, untracked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Literal

import tensorflow as tf

StrategyName = Literal["none", "mirrored", "multiworker"]


def make_strategy(name: StrategyName) -> tf.distribute.Strategy:
    """The strategy called `name`; create it before any other TensorFlow op runs.

    `multiworker` reads `TF_CONFIG` from the environment and refuses a missing or malformed one,
    naming what it expected.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name != "multiworker":
        raise ValueError(
            f"Expected strategy none, mirrored or multiworker. Received: strategy={name!r}."
        )
    cluster_spec(os.environ)  # a clear error before TensorFlow's own
    # Ring all-reduce over gRPC: the collective implementation that runs on CPUs.
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)


def cluster_spec(environ: Mapping[str, str]) -> dict:
    """`{"worker": [addresses], "index": this worker}` from `environ["TF_CONFIG"]`."""
    text = environ.get("TF_CONFIG")
    expected = (
        'Expected TF_CONFIG like {"cluster": {"worker": ["host:port", ...]}, '
        '"task": {"type": "worker", "index": 0}} for strategy=multiworker'
    )
    if not text:
        raise ValueError(f"{expected}. Received: no TF_CONFIG in the environment.")
    try:
        config = json.loads(text)
        workers = list(config["cluster"]["worker"])
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{expected}. Received: TF_CONFIG={text!r} ({error}).") from None
    if task.get("type", "worker") != "worker" or not 0 <= index < len(workers):
        raise ValueError(
            f"{expected}, with 0 <= index < {len(workers)} workers. Received: task={task!r}."
        )
    return {"worker": workers, "index": index}


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's worker index (0, the chief, for a single-process strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0
    return int(resolver.task_id or 0)


__all__ = ["StrategyName", "cluster_spec", "make_strategy", "worker_index"]
