"""Training guards: a run whose loss stops being a number ends with a message, not NaN models."""

from __future__ import annotations

import math

import tf_keras as keras


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite: the weights are no longer usable."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDivergedError` at the first batch whose loss is NaN or infinite.

    Keras' own `TerminateOnNaN` only stops `fit`, which then returns as if training had finished
    and lets the NaN weights be saved, exported and scored. Raising instead stops the run before
    any of that; the last epoch's `BackupAndRestore` checkpoint stays on disk.

    Args:
        stage: what is being trained (named in the message).
        learning_rate: the configured learning rate (named in the message), if known.
    """

    def __init__(self, stage: str = "training", learning_rate: float | None = None):
        super().__init__()
        self.stage = stage
        self.learning_rate = learning_rate
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        rate = "" if self.learning_rate is None else f" (learning rate {self.learning_rate:g})"
        raise TrainingDivergedError(
            f"The {self.stage} loss became {float(loss)} at epoch {self._epoch + 1}, batch "
            f"{batch + 1}{rate}: training diverged. Lower the learning rate, check the inputs "
            f"for NaN or infinite values, and rerun with --restart. Received: loss={float(loss)}."
        )


__all__ = ["StopOnNonFiniteLoss", "TrainingDivergedError"]
