"""Same config, same seed, same numbers: each recipe runs twice, in two processes at once, and
the two `report.json` files agree exactly on every metric and on the loss of every epoch of
every stage (teacher, students, pruning, QAT), the int8 LiteRT rows included. Only wall-clock
timings and the output folders' own paths differ."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reid.synthetic import write_synthetic_market1501
from tests.recipes.test_detect import TINY as TINY_DETECT
from tests.recipes.test_reid import TINY as TINY_REID
from tests.recipes.test_reid import TINY_DATA as TINY_REID_DATA

ROOT = Path(__file__).resolve().parents[2]
# Wall-clock measurements: the only figures allowed to differ between the two runs.
TIMINGS = {"seconds", "train_seconds", "latency_ms", "int8_latency_ms"}
FAST = ["--no-tracking", "-q", "--set", "int8_costs=false"]


def _comparable(value, output: Path):
    """`value` without timings, with the output folder's path replaced by `<out>`."""
    if isinstance(value, dict):
        return {k: _comparable(v, output) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_comparable(v, output) for v in value]
    if isinstance(value, str):
        return value.replace(str(output), "<out>")
    return value


def _run_twice(recipe: str, args: list[str], tmp_path: Path) -> tuple[dict, dict]:
    """Runs `python -m recipes.<recipe>` in two processes at once, each in its own output folder
    (`{out}` in `args` names it); their comparable reports."""
    outputs = [tmp_path / "first", tmp_path / "second"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", f"recipes.{recipe}", *FAST, "--output-dir", str(output),
             *(arg.replace("{out}", str(output)) for arg in args)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for output in outputs
    ]  # fmt: skip
    for process in processes:
        log, _ = process.communicate(timeout=900)
        assert process.returncode == 0, log[-3000:]
    return tuple(
        _comparable(json.loads((output / "report.json").read_text()), output) for output in outputs
    )


def _assert_same(first: dict, second: dict) -> None:
    stages = first["epoch_losses"]
    assert {"teacher", "pruned", "qat"} <= set(stages) and len(stages) >= 5, stages
    assert all(len(losses) >= 1 for losses in stages.values())
    for name in stages:
        assert first["epoch_losses"][name] == second["epoch_losses"][name], name
    for one, other in zip(first["rows"], second["rows"], strict=True):
        assert one == other, one["model"]
    assert any(row["runtime"] == "litert" for row in first["rows"])
    assert first == second


@pytest.mark.slow
def test_detect_twice_gives_the_same_report(tmp_path):
    args = [*TINY_DETECT, "--set", "builtin_dir={out}/shapes"]
    _assert_same(*_run_twice("detect", args, tmp_path))


@pytest.mark.slow
def test_reid_twice_gives_the_same_report(tmp_path):
    data = write_synthetic_market1501(tmp_path / "market", TINY_REID_DATA)
    _assert_same(*_run_twice("reid", [*TINY_REID, "--data", str(data)], tmp_path))
