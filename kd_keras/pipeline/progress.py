"""Progress of long runs, through the `kd_keras` logger: stages, epochs and a heartbeat.

A recipe prints nothing for minutes while it trains; these lines say what it is doing:

    teacher: started (30 epochs)
    teacher epoch 1/30: loss 2.31, accuracy 0.412 (4.1 s)
    ...
    teacher: finished in 121.4 s, final loss 0.0312
    scratch: reused (finished earlier)

`EpochLog` writes the epoch lines (and, within an epoch longer than the heartbeat, the batch it
reached); `Heartbeat` writes "still working" when nothing else was logged for that long, so a run
shows it is alive at least every `HEARTBEAT_SECONDS`. The library only logs; the recipes choose
what is shown (`-q`, `-v`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping

import tf_keras as keras

log = logging.getLogger("kd_keras")

#: At most this many seconds pass between two progress lines of a run.
HEARTBEAT_SECONDS = 30.0


class EpochLog(keras.callbacks.Callback):
    """One INFO line per epoch (loss, metrics, seconds); a line every `every` seconds within a
    long epoch, with the batch reached.

    Args:
        stage: the name the lines start with.
        epochs: the stage's epochs, for `epoch i/n`.
        every: seconds between two lines within an epoch.
    """

    def __init__(self, stage: str, epochs: int, every: float = HEARTBEAT_SECONDS) -> None:
        super().__init__()
        self.stage, self.epochs, self.every = stage, epochs, every
        # Batch logs stay tensors: they are read (and the device synchronised) only to log.
        self._supports_tf_logs = True
        self._epoch_start = self._last = time.monotonic()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._last = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        log.info(
            "%s epoch %d/%d: batch %d, %s (%.0f s)",
            self.stage,
            self._epoch + 1,
            self.epochs,
            batch + 1,
            format_metrics(logs, only=("loss",)),
            now - self._epoch_start,
        )

    def on_epoch_end(self, epoch, logs=None):
        log.info(
            "%s epoch %d/%d: %s (%.1f s)",
            self.stage,
            epoch + 1,
            self.epochs,
            format_metrics(logs),
            time.monotonic() - self._epoch_start,
        )


def format_metrics(logs: Mapping | None, only: tuple[str, ...] | None = None) -> str:
    """`loss 0.512, accuracy 0.91`: Keras logs as text, loss first, 4 significant digits."""
    if not logs:
        return "no metrics"
    keys = [key for key in logs if only is None or key in only]
    keys.sort(key=lambda key: (key != "loss", key))
    parts = []
    for key in keys:
        try:
            value = float(logs[key])
        except (TypeError, ValueError):
            continue
        parts.append(f"{key} {value:.4g}" if math.isfinite(value) else f"{key} {value}")
    return ", ".join(parts) or "no metrics"


class Heartbeat:
    """Logs "still working" when the `kd_keras` logger was silent for `every` seconds.

    A context manager around a whole run; `what` names the current work in the line
    (`heartbeat.what = "evaluating the teacher"`).

    Example:
        >>> with Heartbeat() as heartbeat:
        ...     heartbeat.what = "exporting"
        ...     export()
    """

    def __init__(self, every: float = HEARTBEAT_SECONDS) -> None:
        self.every = every
        self.what = "working"
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kd_keras-heartbeat", daemon=True)
        self._filter = _Touch(self)

    def __enter__(self) -> Heartbeat:
        self._last = time.monotonic()
        log.addFilter(self._filter)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        log.removeFilter(self._filter)

    def _watch(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(min(1.0, self.every / 4)):
            if time.monotonic() - self._last >= self.every:
                log.info("still %s (%.0f s into the run)", self.what, time.monotonic() - start)


class _Touch(logging.Filter):
    """Notes the time of every record the `kd_keras` logger emits (it filters nothing)."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        super().__init__()
        self.heartbeat = heartbeat

    def filter(self, record: logging.LogRecord) -> bool:
        self.heartbeat._last = time.monotonic()
        return True


__all__ = ["HEARTBEAT_SECONDS", "EpochLog", "Heartbeat", "format_metrics", "log"]
