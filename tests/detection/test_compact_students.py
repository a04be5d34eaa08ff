"""The budgeted and progressive students on the detector: the budget applies to the backbone."""

import numpy as np
import pytest
import tf_keras as keras

from detection.config import DetectConfig
from detection.task import DetectionTask
from kd_keras import compress
from kd_keras.config import from_dict
from kd_keras.methods import BUDGET, PROGRESSIVE, budget
from kd_keras.pipeline import Role, Stage


class FitPhases:
    """The `Phases` of a run without an output folder: every phase is fitted, in order."""

    def __init__(self):
        self.names, self.losses, self.details = [], {}, {}

    def fit(self, model, training, stage):
        history = training.model.fit(training.data, epochs=stage.epochs, verbose=0)
        self.names.append(stage.name)
        self.losses[stage.name] = history.history["loss"]

    def note(self, **details):
        self.details.update(details)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detect")
    config = from_dict(
        DetectConfig,
        {
            "image_size": 32,
            "builtin_train": 16,
            "min_steps": 0,
            "builtin_val": 4,
            "batch_size": 8,
            "builtin_dir": str(folder / "shapes"),
            "output_dir": str(folder / "run"),
            "teacher_model": {"width": 0.25, "depth": 1},
            "student_model": {"width": 0.25, "depth": 1},
            "methods": ["budget", "progressive"],
            "budget": {"measure": "params", "search_epochs": 1, "cut_epochs": 0},
            "progressive": {"block_epochs": 1},
            "tracking": {"enabled": False},
        },
    )
    return DetectionTask(config)


def _student(task, method):
    return next(s for s in task.students() if s.method == method)


@pytest.mark.slow
def test_budgeted_detector_narrows_the_backbone_within_the_budget(task):
    keras.utils.set_random_seed(0)
    teacher = task.build("teacher", "teacher")
    spec = _student(task, BUDGET)
    assert spec.label == "distilled, budgeted widths"
    phases = FitPhases()
    stage = Stage(spec.stage, Role.STUDENT, 1, 0.004, method=spec.method)
    model = task.train_student(teacher, spec, stage, phases)
    uniform = task.build("student", "uniform")
    details = phases.details
    assert details["target"] == details["uniform"] == uniform.count_params()
    assert model.count_params() == details["achieved"] <= details["target"]
    # Cut without recovery (cut_epochs: 0), then distilled.
    assert phases.names == ["student_budget_search", "student_budget"]
    assert set(details["widths"]) == {
        "stem_conv",
        "stage1_block1_a_conv",
        "stage2_block1_a_conv",
        "stage3_block1_a_conv",
    }
    # Outside the backbone every layer keeps its size: the neck and heads are the uniform ones.
    for layer in uniform.layers:
        if isinstance(layer, keras.layers.Conv2D) and not task.budget_scope(layer.name):
            assert model.get_layer(layer.name).filters == layer.filters, layer.name
    assert all(np.isfinite(losses).all() for losses in phases.losses.values())
    assert budget.prunable_convs(model, task.budget_scope) == list(details["widths"])


@pytest.mark.slow
def test_progressive_detector_learns_the_teacher_backbone_stage_by_stage(task):
    keras.utils.set_random_seed(0)
    teacher = task.build("teacher", "teacher")
    spec = _student(task, PROGRESSIVE)
    phases = FitPhases()
    model = task.train_student(
        teacher, spec, Stage(spec.stage, Role.STUDENT, 1, 0.004, method=spec.method), phases
    )
    assert phases.names == [
        *(f"student_progressive_block{i}" for i in (1, 2, 3, 4)),
        "student_progressive",
    ]
    assert phases.details["blocks"][0] == ["stem_relu", "stem_relu"]
    assert model.count_params() == task.build("student", "uniform").count_params()
    assert all(layer.trainable for layer in model.layers)


@pytest.mark.slow
def test_lowrank_detector_recovers_with_the_detection_kd_terms(task):
    keras.utils.set_random_seed(0)
    teacher = task.build("teacher", "teacher")
    student = task.build("student", "student")
    factored = compress.decompose(student, 0.5)
    assert factored.count_params() < student.count_params()
    factored_convs = [layer.name for layer in factored.layers if layer.name.endswith("_v")]
    assert factored_convs
    before = factored.get_layer(factored_convs[0]).get_weights()[0].copy()
    stage = Stage("lowrank", Role.LOWRANK, 2, 0.0005)
    training = task.distilled(teacher, factored, stage)  # heatmap, box and neck-hint terms
    losses = training.model.fit(training.data, epochs=stage.epochs, verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    assert not np.array_equal(factored.get_layer(factored_convs[0]).get_weights()[0], before)
