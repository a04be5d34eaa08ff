"""What a run folder already holds, so a rerun reuses finished stages instead of retraining them.

A recipe run is a sequence of stages (teacher, scratch student, distilled student, pruning, QAT,
export). `RunState` keeps `<output_dir>/run_state.json`: the config the folder was made with and,
for each finished stage, what it produced (a file and a few numbers). The file is rewritten
atomically after every stage, so after any interruption (even `kill -9`) it names exactly the
stages whose outputs are complete. A stage that was interrupted is not in it; its own
`BackupAndRestore` checkpoint resumes it from the last finished epoch.

A rerun whose config differs in a key that changes a finished stage is refused: that stage was
made with the old values and mixing it with stages made with the new ones would silently produce
a wrong comparison. A key that changes only stages that have not finished may change (a run that
crashed at QAT because of a QAT setting resumes with the setting fixed). Data that changed (the
task's `data` fingerprint: annotation digests, image listings) is refused likewise.
`restart=True` forgets the recorded stages and their checkpoints instead.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kd_keras.config import ConfigError, flatten
from kd_keras.io import atomic_write_json
from kd_keras.pipeline.fingerprint import describe_changes

STATE_FILE = "run_state.json"
_FORMAT = 2
_SHOWN = 8


class RunState:
    """The finished stages of one output folder and the config they were trained with.

    Args:
        output_dir: the run's output folder.
        config: the run's resolved config as a (nested) plain dict.
        ignore: top-level or dotted keys that may change between reruns without changing what is
            trained (output folder, tracking settings, latency repeats...).
        restart: forget every recorded stage and remove `checkpoints_dir`.
        checkpoints_dir: the folder of the stages' `BackupAndRestore` checkpoints (removed on
            `restart`); default `<output_dir>/checkpoints`.
        data: the fingerprint of the data (`kd_keras.pipeline.fingerprint`); every stage
            depends on it.
        changes_stage: `changes_stage(key, stage)` tells whether a change of the dotted config
            `key` changes what `stage` trains (default: every key changes every stage).

    Raises:
        ConfigError: the folder holds stages trained with another config or other data (and
            `restart` is false), its state file cannot be read, or `output_dir` is a file.

    Example:
        >>> state = RunState("runs/detect", config_dict, ignore=("output_dir", "tracking"))
        >>> if not state.done("teacher"):
        ...     train_teacher()
        ...     state.finish("teacher", file="runs/detect/teacher.keras", seconds=12.5)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        config: Mapping[str, Any],
        ignore: Iterable[str] = (),
        restart: bool = False,
        checkpoints_dir: str | os.PathLike | None = None,
        data: Mapping[str, Any] | None = None,
        changes_stage: Callable[[str, str], bool] | None = None,
    ):
        self.output_dir = Path(output_dir)
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ConfigError(
                f"The output folder {self.output_dir} is an existing file, not a folder. Pass "
                f"--output-dir with a folder name. Received: output_dir={str(output_dir)!r}."
            )
        self.path = self.output_dir / STATE_FILE
        self.ignore = tuple(ignore)
        self.checkpoints_dir = Path(checkpoints_dir or self.output_dir / "checkpoints")
        self._fingerprint = self._comparable(config)
        self._data = None if data is None else json.loads(json.dumps(dict(data), default=str))
        self._changes_stage = changes_stage or (lambda key, stage: True)
        self._stages: dict[str, dict] = {}
        self._loaded: list[str] = []
        self._ran: set[str] = set()
        if restart:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.checkpoints_dir, ignore_errors=True)
            return
        if self.path.is_file():
            self._load()

    @property
    def finished(self) -> list[str]:
        """The finished stages, in the order they finished."""
        return list(self._stages)

    def done(self, stage: str) -> dict | None:
        """What `stage` recorded when it finished, or `None` if it has not (or its file is gone)."""
        record = self._stages.get(stage)
        if record is None:
            return None
        if record.get("file") is not None and not Path(record["file"]).exists():
            return None  # its output was deleted: the stage must run again
        return dict(record)

    @property
    def reused(self) -> list[str]:
        """The stages that had finished before this process started (and can be reused)."""
        return [
            stage
            for stage in self._loaded
            if stage not in self._ran and self.done(stage) is not None
        ]

    def finish(self, stage: str, file: str | os.PathLike | None = None, **values) -> None:
        """Records `stage` as finished (with the file it produced and JSON-able values).

        A stage that ran again (its file had gone) invalidates every stage recorded after it:
        they were made from its old output.
        """
        if stage in self._stages:
            names = list(self._stages)
            for name in names[names.index(stage) :]:
                del self._stages[name]
        self._ran.add(stage)
        self._stages[stage] = {"file": None if file is None else str(file), **values}
        self._write()

    # === Internals ===

    def _comparable(self, config: Mapping[str, Any]) -> dict[str, Any]:
        flat = flatten(json.loads(json.dumps(dict(config), default=str)))
        return {
            key: value
            for key, value in flat.items()
            if not any(key == i or key.startswith(f"{i}.") for i in self.ignore)
        }

    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text())
            old = saved["config"]
            stages = {record.pop("stage"): record for record in saved["stages"]}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"Cannot read the run state {self.path} ({error}). Delete it, or rerun with "
                "--restart to train every stage again. "
                f"Received: output_dir={str(self.output_dir)!r}."
            ) from None
        if stages:
            self._refuse_changed_data(saved.get("data"), stages)
            self._refuse_changed_config(old, stages)
        self._stages = dict(stages)
        self._loaded = list(stages)

    def _refuse_changed_data(self, old: Mapping | None, stages: Mapping) -> None:
        if old is None or self._data is None:
            return  # one side was not fingerprinted: nothing to compare
        changes = describe_changes(old, self._data)
        if changes:
            raise ConfigError(
                f"{self.output_dir} holds stages ({', '.join(stages)}) trained on other data; "
                f"changed: {'; '.join(changes[:_SHOWN])}. Use another --output-dir, restore "
                "the data, or pass --restart to train every stage again. "
                f"Received: output_dir={str(self.output_dir)!r}."
            )

    def _refuse_changed_config(self, old: Mapping, stages: Mapping) -> None:
        changed = sorted(
            key
            for key in set(old) | set(self._fingerprint)
            if old.get(key, "<unset>") != self._fingerprint.get(key, "<unset>")
        )
        spoiled = {
            key: [stage for stage in stages if self._changes_stage(key, stage)] for key in changed
        }
        spoiled = {key: names for key, names in spoiled.items() if names}
        if not spoiled:
            return  # the changed keys only concern stages that have not finished
        shown = "; ".join(
            f"{key}: {old.get(key, '<unset>')!r} -> {self._fingerprint.get(key, '<unset>')!r} "
            f"(trained into {', '.join(names)})"
            for key, names in list(spoiled.items())[:_SHOWN]
        )
        more = f" and {len(spoiled) - _SHOWN} more" if len(spoiled) > _SHOWN else ""
        raise ConfigError(
            f"{self.output_dir} holds stages ({', '.join(stages)}) trained with another "
            f"config; changed: {shown}{more}. Use another --output-dir, restore the old "
            f"values, or pass --restart to train every stage again. "
            f"Received: output_dir={str(self.output_dir)!r}."
        )

    def _write(self) -> None:
        # A list keeps the stages in the order they finished (the JSON writer sorts keys).
        stages = [{"stage": name, **record} for name, record in self._stages.items()]
        atomic_write_json(
            self.path,
            {"format": _FORMAT, "config": self._fingerprint, "data": self._data, "stages": stages},
        )


__all__ = ["STATE_FILE", "RunState"]
