import json

import pytest

from classification.config import ClassifyConfig
from classification.task import ClassificationTask
from kd_keras.config import from_dict
from kd_keras.pipeline import Student, prepare, run_pipeline

TINY = {
    "epochs": 2,
    "teacher_epochs": 2,
    "latency_runs": 3,
    "int8_costs": False,
    "teacher_model": {"width": 0.5},
    "compress": {"prune_epochs": 1, "qat_epochs": 1, "calibration_images": 32},
    "tracking": {"enabled": False},
}


@pytest.mark.slow
def test_pipeline_from_python_then_rerun_reuses_every_stage(tmp_path):
    settings = {**TINY, "int8_costs": True, "output_dir": str(tmp_path)}
    report = run_pipeline(prepare(ClassificationTask, from_dict(ClassifyConfig, settings)))
    config = from_dict(ClassifyConfig, {**settings, "int8_costs": False})
    names = [row["model"] for row in report["rows"]]
    assert names == [
        "teacher",
        "student (scratch)",
        "student (distilled)",
        "student (pruned 50%, QAT)",
        "student (int8 TFLite, LiteRT)",
    ]
    assert report["reused_stages"] == []
    assert json.loads((tmp_path / "report.json").read_text()) == report
    rows = {row["model"]: row for row in report["rows"]}
    # The teacher and the float students are timed as float32 .tflite files too.
    assert all(rows[name]["latency_ms"] > 0 for name in names if name != names[3])
    assert rows["student (int8 TFLite, LiteRT)"]["params"] == rows["student (scratch)"]["params"]
    # Every trained network also gets the size and latency of its post-training int8 file.
    # One byte per weight plus the flatbuffer's own few kB (float32 would need four per weight).
    for name in names[:3]:
        params = rows[name]["params"]
        assert params < rows[name]["int8_bytes"] < 1.5 * params + 10_000, rows[name]
        assert rows[name]["int8_latency_ms"] > 0, name
    # The distilled student's temperature is recorded per epoch (constant by default).
    assert report["temperatures_per_epoch"] == {"distilled": [4.0, 4.0]}

    # A rerun without the int8 costs reuses every stage (the setting trains nothing).
    again = run_pipeline(prepare(ClassificationTask, config))
    assert again["reused_stages"] == ["teacher", "scratch", "student", "pruned", "qat"]
    for first, second in zip(report["rows"], again["rows"]):
        assert second["accuracy"] == first["accuracy"], second["model"]
        assert "int8_bytes" not in second, second["model"]


def test_the_shipped_student_and_the_baseline_come_from_the_task(tmp_path):
    config = from_dict(ClassifyConfig, {**TINY, "output_dir": str(tmp_path)})
    students = ClassificationTask(config).students()
    assert [s.stage for s in students] == ["scratch", "student"]
    assert [s.distilled for s in students] == [False, True]
    assert [s.ships for s in students] == [False, True]
    assert students[1] == Student(
        "student", "distilled", "student.keras", seed=0, ships=True, logged_as="distilled"
    )


def test_subset_beyond_the_data_is_refused_when_the_task_is_built(tmp_path):
    config = from_dict(ClassifyConfig, {**TINY, "classes": [0, 12]})
    with pytest.raises(ValueError, match="Class 12 does not exist: the teacher has 10 classes"):
        ClassificationTask(config)


def test_each_method_adds_a_student_built_with_it(tmp_path):
    config = from_dict(ClassifyConfig, {**TINY, "methods": ["lma"], "output_dir": str(tmp_path)})
    task = ClassificationTask(config)
    students = task.students()
    assert [s.label for s in students] == ["scratch", "distilled", "distilled, LMA activations"]
    lma = students[-1]
    assert (lma.stage, lma.file, lma.method.name, lma.ships) == (
        "student_lma",
        "student_lma.keras",
        "lma",
        False,
    )
    layers = [type(layer).__name__ for layer in task.build("student", "s", lma).layers]
    plain = [type(layer).__name__ for layer in task.build("student", "s", students[1]).layers]
    assert "LMA" in layers and "LMA" not in plain
    assert layers.count("LMA") == plain.count("ReLU")


def test_the_dkd_student_learns_with_decoupled_kd_and_the_shipped_one_with_distill_loss(tmp_path):
    from kd_keras.pipeline import Role, Stage

    settings = {**TINY, "methods": ["dkd"], "output_dir": str(tmp_path)}
    settings["distill"] = {"dkd_target_weight": 0.5, "dkd_non_target_weight": 2.0}
    task = ClassificationTask(from_dict(ClassifyConfig, settings))
    plain, dkd = task.students()[1:]
    assert (dkd.label, dkd.stage) == ("distilled, decoupled KD", "student_dkd")
    model = task.build("student", "s", dkd)
    for student, loss in ((plain, "kl"), (dkd, "dkd")):
        stage = Stage(student.stage, Role.STUDENT, 2, 0.002, method=student.method)
        (term,), _ = task.kd_terms(stage, model)
        assert (term.loss, term.dkd_weights) == (loss, (0.5, 2.0))


@pytest.mark.slow
def test_an_lma_student_ships_as_int8_and_agrees_in_litert(tmp_path):
    import tf_keras as keras

    settings = {**TINY, "student_model": {"width": 0.25, "activation": "lma"}}
    config = from_dict(ClassifyConfig, {**settings, "output_dir": str(tmp_path)})
    report = run_pipeline(prepare(ClassificationTask, config))
    rows = {row["model"]: row for row in report["rows"]}
    student = keras.models.load_model(tmp_path / "student.keras")
    assert sum(type(layer).__name__ == "LMA" for layer in student.layers) == 3
    int8 = rows["student (int8 TFLite, LiteRT)"]
    qat = rows["student (pruned 50%, QAT)"]
    assert abs(int8["accuracy"] - qat["accuracy"]) <= 0.03
    assert report["compression"]["export"]["parity"]["top1_agreement"] >= 0.97
    assert int8["size_bytes"] < rows["student (distilled)"]["size_bytes"] / 3


@pytest.mark.slow
def test_lowrank_factors_the_student_before_pruning_and_qat(tmp_path):
    compression = {**TINY["compress"], "lowrank": 0.5, "lowrank_epochs": 1}
    config = from_dict(
        ClassifyConfig, {**TINY, "compress": compression, "output_dir": str(tmp_path)}
    )
    report = run_pipeline(prepare(ClassificationTask, config))
    rows = {row["model"]: row for row in report["rows"]}
    factored = rows["student (low-rank 0.5, pruned 50%, QAT)"]
    int8 = rows["student (int8 TFLite, LiteRT)"]
    distilled = rows["student (distilled)"]
    lowrank = report["compression"]["lowrank"]
    assert factored["params"] == int8["params"] == lowrank["params_after"]
    assert lowrank["params_before"] == distilled["params"] > int8["params"]
    assert all(layer["rank"] >= 1 for layer in lowrank["layers"].values())
    assert lowrank["layers"]["stage2_block1_conv"]["rank"] == 8  # half of its 16 channels
    # The first conv stays dense under pruning (keep_dense), also once factored.
    sparsity = report["compression"]["sparsity"]
    assert all(sparsity[name] == 0.0 for name in sparsity if name.startswith("stage1_block1_conv"))
    assert abs(int8["accuracy"] - factored["accuracy"]) <= 0.03
    assert int8["size_bytes"] < rows["student (distilled)"]["size_bytes"] / 3


@pytest.mark.slow
def test_robust_method_row_and_pgd_accuracy_of_every_model(tmp_path):
    settings = {**TINY, "methods": ["robust"], "compress": {**TINY["compress"], "qat_epochs": 0}}
    config = from_dict(ClassifyConfig, {**settings, "output_dir": str(tmp_path)})
    report = run_pipeline(prepare(ClassificationTask, config))
    rows = {row["model"]: row for row in report["rows"]}
    robust = rows["student (distilled, robust KD (PGD))"]
    plain = rows["student (distilled)"]
    assert robust["params"] == plain["params"]
    for name in ("teacher", "student (scratch)", "student (distilled)", robust["model"]):
        assert 0 <= rows[name]["pgd_accuracy"] <= rows[name]["accuracy"], name
    # Trained on PGD examples of the radius it is attacked with, the robust student resists them.
    assert robust["pgd_accuracy"] > plain["pgd_accuracy"]


def test_robust_kd_with_offline_teacher_outputs_is_refused():
    from kd_keras.config import ConfigError

    with pytest.raises(ConfigError, match="offline=true cannot be combined with robust KD"):
        from_dict(ClassifyConfig, {"offline": True, "methods": ["robust"]})


def test_pool_mixup_with_offline_teacher_outputs_is_refused():
    from kd_keras.config import ConfigError

    with pytest.raises(ConfigError, match="offline=true cannot be combined with unlabeled_mixup"):
        from_dict(ClassifyConfig, {"offline": True, "unlabeled_mixup": 0.5})


def test_progressive_kd_with_offline_teacher_outputs_is_refused():
    from kd_keras.config import ConfigError

    with pytest.raises(ConfigError, match=r"cannot be combined with methods: \[progressive\]"):
        from_dict(ClassifyConfig, {"offline": True, "methods": ["progressive"]})


@pytest.mark.slow
def test_okddip_student_learns_from_peers_without_the_teacher(tmp_path):
    settings = {**TINY, "methods": ["okddip"], "compress": {**TINY["compress"], "qat_epochs": 0}}
    config = from_dict(ClassifyConfig, {**settings, "output_dir": str(tmp_path)})
    report = run_pipeline(prepare(ClassificationTask, config))
    rows = {row["model"]: row for row in report["rows"]}
    online = rows["student (distilled, OKDDip peers, no teacher)"]
    assert online["params"] == rows["student (distilled)"]["params"]  # the leader alone is kept
    assert online["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert (tmp_path / "student_okddip.keras").is_file()


@pytest.mark.slow
def test_budgeted_and_progressive_students_and_their_phases_resume(tmp_path):
    settings = {
        **TINY,
        "methods": ["budget", "progressive"],
        "budget": {"search_epochs": 2},
        "progressive": {"block_epochs": 1},
        "compress": {"sparsity": 0, "qat_epochs": 0, "export": None},
        "output_dir": str(tmp_path),
    }
    config = from_dict(ClassifyConfig, settings)
    report = run_pipeline(prepare(ClassificationTask, config))
    rows = {row["model"]: row for row in report["rows"]}
    uniform = rows["student (distilled)"]
    budgeted = rows["student (distilled, budgeted widths)"]
    blockwise = rows["student (distilled, progressive blockwise)"]
    details = report["student_details"]["distilled, budgeted widths"]
    # The default budget is the uniform student's FLOPs; the learned widths stay within it.
    assert details["measure"] == "flops"
    assert details["target"] == details["uniform"] == uniform["flops"]
    assert budgeted["flops"] == details["achieved"] <= details["target"]
    assert details["uniform_widths"] == {
        "stage1_block1_conv": 8,
        "stage2_block1_conv": 16,
        "stage3_block1_conv": 32,
    }
    assert details["widths"] != details["uniform_widths"]
    # Search, one epoch per cut (a conv cut to its wide width is skipped), then `epochs`.
    cuts = sum(
        details["widths"][conv] != 2 * details["uniform_widths"][conv] for conv in details["widths"]
    )
    assert details["epochs"] == 2 + cuts + TINY["epochs"]
    assert blockwise["params"] == uniform["params"]
    for row in (budgeted, blockwise):
        assert row["accuracy"] > 0.3, row["model"]  # 10 classes: chance is 0.1
    phases = sorted(path.name for path in (tmp_path / "phases").iterdir())
    assert "student_budget_search.weights.h5" in phases
    assert [name for name in phases if "progressive" in name] == [
        f"student_progressive_block{i}.weights.h5" for i in (1, 2, 3)
    ]

    # Interrupted in its last phase, the budgeted student resumes after the finished phases.
    state_path = tmp_path / "run_state.json"
    state = json.loads(state_path.read_text())
    state["stages"] = [s for s in state["stages"] if s["stage"] != "student_budget"]
    state_path.write_text(json.dumps(state))
    search = (tmp_path / "phases" / "student_budget_search.weights.h5").stat().st_mtime_ns
    again = run_pipeline(prepare(ClassificationTask, config))
    assert "student_budget_search" in again["reused_stages"]
    assert "student_budget" not in again["reused_stages"]
    assert (tmp_path / "phases" / "student_budget_search.weights.h5").stat().st_mtime_ns == search
    assert again["student_details"]["distilled, budgeted widths"]["widths"] == details["widths"]


def test_distilled_students_mix_in_the_unlabelled_pool_and_scratch_does_not(tmp_path):
    import numpy as np
    from PIL import Image

    from kd_keras.pipeline import Role, Stage

    pool = tmp_path / "frames"
    pool.mkdir()
    for index in range(20):
        Image.fromarray(np.full((16, 16, 3), index * 10, np.uint8)).save(pool / f"{index:02d}.jpg")
    settings = {**TINY, "output_dir": str(tmp_path / "out"), "unlabeled_data": str(pool)}
    task = prepare(ClassificationTask, from_dict(ClassifyConfig, settings)).task
    # Read like the digits: 8×8 grayscale in [0, 1].
    assert task.unlabeled.images.shape == (20, 8, 8, 1)
    np.testing.assert_allclose(task.unlabeled.images[3], 30 / 255, rtol=1e-6)
    stage = Stage("student", Role.STUDENT, 1, 0.001)
    teacher, student = task.build("teacher", "t"), task.build("student", "s")
    labelled_batches = int(np.ceil(len(task.x_train) / task.config.batch_size))
    assert all(len(element) == 2 for element in task.plain(student, stage).data)
    weights = [float(e[2][0]) for e in task.distilled(teacher, student, stage).data]
    assert weights.count(1.0) == labelled_batches and weights.count(0.0) == labelled_batches

    offline = prepare(
        ClassificationTask,
        from_dict(ClassifyConfig, {**settings, "offline": True, "augment": False}),
    ).task
    elements = list(offline.distilled(teacher, student, stage).data)
    pooled = [e for e in elements if float(e[3][0]) == 0.0]
    # Offline, the unlabelled batches carry the teacher's cached outputs on the pool.
    x, _, cached, _ = pooled[0]
    np.testing.assert_allclose(cached.numpy(), teacher.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
