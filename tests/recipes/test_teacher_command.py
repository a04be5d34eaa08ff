"""`python -m recipes.teacher`: the shipped teacher's command makes the same bytes every time."""

import json

import pytest

from kd_keras.pipeline.builtin_teacher import BuiltinTeacher
from recipes import teacher

TINY_TEACHER = [
    "teacher_epochs=2",
    "min_steps=0",
    "warmup_steps=2",
    "image_size=32",
    "builtin_train=16",
    "builtin_val=6",
    "batch_size=4",
    "teacher_model.width=0.25",
    "teacher_model.depth=1",
]


@pytest.mark.slow
def test_the_teacher_command_is_reproducible_bit_for_bit_and_checks_itself(tmp_path, capsys):
    sets = [*TINY_TEACHER, f"builtin_dir={tmp_path / 'shapes'}"]
    args = ["detect", *[part for value in sets for part in ("--set", value)]]
    first, second = BuiltinTeacher(tmp_path / "a"), BuiltinTeacher(tmp_path / "b")
    assert teacher.main([*args, "--output", str(first.directory)]) == 0
    assert teacher.main([*args, "--output", str(second.directory)]) == 0
    assert first.weights.read_bytes() == second.weights.read_bytes()
    record = first.record()
    assert record["weights_digest"] == second.record()["weights_digest"]
    assert record["settings"]["image_size"] == 32 and record["seed"] == 0
    assert set(record["metrics"]) >= {"AP", "AP50"}
    assert record["command"].startswith("python -m recipes.teacher detect --set teacher_epochs=2")

    capsys.readouterr()
    assert teacher.main([*args, "--output", str(first.directory), "--check"]) == 0
    assert "identical, bit for bit" in capsys.readouterr().out
    first.record_file.write_text(json.dumps({**record, "weights_digest": "sha256:0"}))
    assert teacher.main([*args, "--output", str(first.directory), "--check"]) == 1
    assert "DIFFERENT weights" in capsys.readouterr().out
