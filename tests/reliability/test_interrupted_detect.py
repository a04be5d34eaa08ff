"""Fault injection: `kill -9` a tiny detection run in each kind of training, rerun, compare.

Every rerun must reuse the stages that had finished (their files untouched), resume the killed
one from its last epoch, and end with the report an uninterrupted run gives, within the noise
of resuming mid-way; the MLflow run of the killed processes is continued and closed.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from kd_keras import config as config_lib
from recipes import detect

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--epochs", "2",
    "--set", "teacher_epochs=2",
    "--set", "min_steps=0",
    "--set", "image_size=32",
    "--set", "builtin_train=16",
    "--set", "builtin_val=6",
    "--set", "batch_size=4",
    "--set", "teacher_model.width=0.25",
    "--set", "teacher_model.depth=1",
    "--set", "student_model.width=0.25",
    "--set", "compress.prune_epochs=2",
    "--set", "compress.qat_epochs=2",
    "--set", "compress.calibration_images=8",
    "--set", "latency_runs=3",
    "--set", "int8_costs=false",
    "--set", "tracking.register_as=null",
]  # fmt: skip
# (stage recorded in run_state.json, its checkpoint folder, the file it leaves)
STAGES = [
    ("teacher", "teacher", "teacher.keras"),
    ("scratch", "scratch", "student_scratch.keras"),
    ("student", "student", "student.keras"),
    ("pruned", "pruned", "student_pruned.keras"),
    ("qat", "qat", "student_qat.weights.h5"),
]
# One kill per kind of training: plain fit (teacher; the scratch student trains the same way),
# Distiller, pruning and QAT.
KILLED = ("teacher", "student", "pruned", "qat")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finished(output: Path) -> list[str]:
    state = output / "run_state.json"
    if not state.is_file():
        return []
    return [record["stage"] for record in json.loads(state.read_text())["stages"]]


def _kill_during(args: list[str], output: Path, checkpoint: str, timeout: float = 300) -> None:
    """Starts the recipe and SIGKILLs it once `checkpoint` has saved its first epoch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "recipes.detect", *args],
        cwd=output.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = output / "checkpoints" / checkpoint / "chief" / "checkpoint"
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"the run ended before {checkpoint}: {process.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {checkpoint} checkpoint after {timeout} s")
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        process.stderr.close()


@pytest.mark.slow
def test_kill_in_each_kind_of_stage_then_rerun_reuses_finished_stages(tmp_path):
    shapes = ["--set", f"builtin_dir={tmp_path / 'shapes'}"]
    reference_dir = tmp_path / "reference"
    reference_store = f"sqlite:///{tmp_path}/reference.db"
    assert detect.main([*TINY, *shapes, "--output-dir", str(reference_dir),
                        "--tracking-uri", reference_store]) == 0  # fmt: skip
    reference = json.loads((reference_dir / "report.json").read_text())

    output = tmp_path / "run"
    store = f"sqlite:///{tmp_path}/mlflow.db"
    args = [*TINY, *shapes, "--output-dir", str(output), "--tracking-uri", store]
    digests: dict[str, str] = {}
    for index, (stage, checkpoint, _) in enumerate(STAGES):
        if stage not in KILLED:
            continue
        _kill_during(args, output, checkpoint)
        earlier = [name for name, _, _ in STAGES[:index]]
        assert _finished(output) == earlier, f"killed in {stage}"
        for name, _, file in STAGES[:index]:
            digest = _digest(output / file)
            # A finished stage's file is never rewritten by a later run.
            assert digests.setdefault(name, digest) == digest, f"{name} retrained"
    assert detect.main(args) == 0
    report = json.loads((output / "report.json").read_text())
    assert report["reused_stages"] == ["teacher", "scratch", "student", "pruned"]
    for name, _, file in STAGES[:-1]:
        assert _digest(output / file) == digests[name]
    assert _finished(output) == [name for name, _, _ in STAGES]

    # Same models, and the same results within the noise of resuming mid-way.
    rows = {row["model"]: row for row in report["rows"]}
    for expected in reference["rows"]:
        row = rows[expected["model"]]
        seen = f"{row} vs uninterrupted {expected}"
        assert row["params"] == expected["params"] and row["flops"] == expected["flops"], seen
        assert row["AP"] == pytest.approx(expected["AP"], abs=0.05), seen
        if expected.get("train_loss") is not None:
            assert row["train_loss"] == pytest.approx(expected["train_loss"], rel=0.3), seen
    assert report["compression"]["prune_sparsity"] == pytest.approx(
        reference["compression"]["prune_sparsity"], abs=0.01
    )
    assert report["compression"]["qat_loss"] == pytest.approx(
        reference["compression"]["qat_loss"], rel=0.3
    ), (report["compression"], reference["compression"])

    # One MLflow run, opened by the first killed process, continued and closed by the last.
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("kd-keras-detection").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id == report["mlflow"]["run_id"]
    teacher_losses = client.get_metric_history(runs[0].info.run_id, "teacher/loss")
    assert {m.step for m in teacher_losses} == {0, 1}  # no epoch lost to the kills


def test_rerun_with_a_changed_model_config_is_refused_before_training(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    base = ["--set", f"builtin_dir={tmp_path / 'shapes'}", "--output-dir", str(output)]
    base += ["--set", "builtin_train=4", "--set", "builtin_val=2", "--set", "image_size=32"]
    base += ["--set", "batch_size=2", "--no-tracking"]
    config = detect.parse_config(base)
    from kd_keras.pipeline import RERUN_SAFE_KEYS
    from kd_keras.pipeline.run_state import RunState

    state = RunState(output, config_lib.to_dict(config), ignore=RERUN_SAFE_KEYS)
    (output / "teacher.keras").write_bytes(b"stands for a finished teacher")
    state.finish("teacher", file=output / "teacher.keras", seconds=1.0)

    changed = [*base, "--set", "teacher_model.width=0.75"]
    assert detect.main(changed) == 2
    err = capsys.readouterr().err
    assert "holds stages (teacher) trained with another config" in err
    assert "teacher_model.width: 1.0 -> 0.75 (trained into teacher)" in err and "--restart" in err
    # A student key does not change the finished teacher: it is reused.
    wider_student = detect.prepare(detect.parse_config([*base, "--set", "student_model.width=1"]))
    assert wider_student.state.reused == ["teacher"]
    assert (output / "teacher.keras").read_bytes() == b"stands for a finished teacher"
    # Tracking settings may change freely; --restart forgets the stages.
    assert RunState(output, config_lib.to_dict(config), RERUN_SAFE_KEYS).finished == ["teacher"]
    restarted = detect.prepare(detect.parse_config([*changed, "--restart"]))
    assert restarted.state.finished == [] and not (output / "run_state.json").exists()
