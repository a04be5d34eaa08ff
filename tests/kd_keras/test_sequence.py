"""The whole stage sequence on a toy task written in six methods: order, reuse, phases, seed
means and export rows, in seconds."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image
from pydantic import Field

from kd_keras import LogitsDistillation, export
from kd_keras.compat import is_op_determinism_enabled
from kd_keras.config import ConfigError, from_dict
from kd_keras.distiller import Distiller
from kd_keras.methods import Method
from kd_keras.pipeline import Role, Stage, Student, Task, Training, prepare, run_pipeline
from kd_keras.pipeline.determinism import set_determinism
from kd_keras.pipeline.settings import CompressSettings, DistillSettings, ModelSettings, RunConfig


class ToyConfig(RunConfig):
    seed: int = Field(0, ge=0)
    methods: tuple[str, ...] = ()
    teacher_model: ModelSettings = ModelSettings(width=2.0)
    student_model: ModelSettings = ModelSettings(width=0.5)
    distill: DistillSettings = DistillSettings()
    compress: CompressSettings = CompressSettings(
        sparsity=0.5, prune_epochs=1, qat_epochs=1, calibration_images=16
    )


def _train_twice(task, teacher, student, stage, phases):
    """A method in two phases: a warm-up at half the learning rate, then the stage itself."""
    model = task.build("student", student.stage, student)
    warmup = stage.phase("warmup", 1)
    phases.fit(model, task.distilled(teacher, model, warmup), warmup)
    phases.fit(model, task.distilled(teacher, model, stage), stage)
    phases.note(phases=2)
    return model


TWO_PHASE = Method("two_phase", "two phases", _train_twice)


class ToyTask(Task):
    """Four-feature, three-class data; a dense network whose width the config sets."""

    name, headline, metric_keys = "toy", "accuracy", ("accuracy",)
    methods = (TWO_PHASE,)

    def __init__(self, config) -> None:
        super().__init__(config)
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(96, 4)).astype(np.float32)
        self.y = np.argmax(self.x[:, :3] + 0.3 * self.x[:, 3:], axis=1)

    def build(self, role, name, student=None):
        width = (
            self.config.teacher_model if role == "teacher" else self.config.student_model
        ).width
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(int(8 * width), activation="relu", name="hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden), name=name)

    def plain(self, model, stage):
        model.compile(keras.optimizers.Adam(0.05), _loss(), ["accuracy"])
        return Training(model, self._data(stage.seed))

    def distilled(self, teacher, student, stage):
        distiller = Distiller(teacher, student, LogitsDistillation(temperature=2.0), 0.5, 0.5)
        distiller.compile(keras.optimizers.Adam(0.05), _loss(), ["accuracy"])
        return Training(distiller, self._data(stage.seed))

    def evaluate(self, model):
        predicted = np.argmax(model.predict(self.x, verbose=0), axis=1)
        return {"accuracy": float(np.mean(predicted == self.y))}

    def evaluate_tflite(self, path):
        return {"accuracy": export.evaluate_tflite(path, self.x, self.y)}

    def calibration_images(self):
        return self.x[: self.config.compress.calibration_images]

    def _data(self, seed):
        data = tf.data.Dataset.from_tensor_slices((self.x, self.y))
        return data.shuffle(96, seed=seed).batch(16)


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class SeededToyTask(ToyTask):
    """The default students, and the same two once more from seed 7 (counted in the means)."""

    def students(self):
        first = super().students()
        again = [
            Student(
                f"{s.stage}_seed7", s.label, f"seed7/{s.file}", s.distilled, seed=7, tabled=False
            )
            for s in first
        ]
        return [*first, *again]


def _config(tmp_path, **values):
    base = {"output_dir": str(tmp_path), "epochs": 2, "teacher_epochs": 2, "latency_runs": 2}
    return from_dict(
        ToyConfig, {**base, "int8_costs": False, "tracking": {"enabled": False}, **values}
    )


def _run(task_class, config) -> dict:
    return run_pipeline(prepare(task_class, config))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("toy")
    config = _config(output, methods=["two_phase"])
    return config, _run(ToyTask, config)


def test_stages_run_in_order_and_the_rows_follow_them(toy_run):
    config, report = toy_run
    state = json.loads((Path(config.output_dir) / "run_state.json").read_text())
    assert [stage["stage"] for stage in state["stages"]] == [
        "teacher",
        "scratch",
        "student",
        "student_two_phase_warmup",
        "student_two_phase",
        "pruned",
        "qat",
    ]
    assert [row["model"] for row in report["rows"]] == [
        "teacher",
        "student (scratch)",
        "student (distilled)",
        "student (distilled, two phases)",
        "student (pruned 50%, QAT)",
        "student (int8 TFLite, LiteRT)",
    ]
    assert report["student_details"] == {"distilled, two phases": {"phases": 2}}
    assert report["reused_stages"] == []
    # Every stage's loss at each of its epochs, in stage order, as the stage trained it.
    losses = report["epoch_losses"]
    assert list(losses) == [stage["stage"] for stage in state["stages"]]
    assert [len(epochs) for epochs in losses.values()] == [2, 2, 2, 1, 2, 1, 1]
    assert all(np.isfinite(loss) and loss > 0 for epochs in losses.values() for loss in epochs)
    assert losses["qat"][-1] == pytest.approx(report["compression"]["qat_loss"], abs=1e-6)


def test_the_exported_row_runs_in_litert_and_matches_its_keras_model(toy_run):
    _, report = toy_run
    keras_row, litert_row = report["rows"][-2:]
    assert litert_row["runtime"] == "litert" and keras_row["runtime"] == "keras"
    assert abs(litert_row["accuracy"] - keras_row["accuracy"]) <= 0.05
    assert 0 < litert_row["size_bytes"] < 4096  # int8 weights of a 4-4-3 network
    assert report["compression"]["export"]["mode"] == "int8"
    assert report["compression"]["prune_sparsity"] == pytest.approx(0.5, abs=0.1)
    assert report["rows"][0]["accuracy"] >= 0.6  # the teacher learned the toy rule


def test_a_rerun_reuses_every_stage_and_reports_the_same(toy_run):
    config, report = toy_run
    again = _run(ToyTask, config)
    assert again["reused_stages"] == [
        "teacher",
        "scratch",
        "student",
        "student_two_phase_warmup",
        "student_two_phase",
        "pruned",
        "qat",
    ]
    for first, second in zip(report["rows"], again["rows"]):
        assert first["model"] == second["model"]
        assert first["accuracy"] == second["accuracy"]
    assert again["epoch_losses"] == report["epoch_losses"]


def test_students_of_other_seeds_count_in_the_means_only(tmp_path):
    config = _config(tmp_path, compress={"sparsity": 0.0, "qat_epochs": 0, "export": None})
    report = _run(SeededToyTask, config)
    assert [row["model"] for row in report["rows"]] == [
        "teacher",
        "student (scratch)",
        "student (distilled)",
    ]
    runs = report["seed_runs"]
    assert [(run["model"], run["seed"]) for run in runs] == [
        ("student (scratch)", 0),
        ("student (distilled)", 0),
        ("student (scratch)", 7),
        ("student (distilled)", 7),
    ]
    for row in report["rows"][1:]:
        values = [run["accuracy"] for run in runs if run["model"] == row["model"]]
        assert row["seeds"] == 2
        assert row["accuracy"] == pytest.approx(np.mean(values))
        assert row["accuracy_std"] == pytest.approx(np.std(values))
    # The distilled student against scratch, paired by seed, on the headline metric.
    gain = report["kd_gain"]["student (distilled)"]
    by_model = {(run["model"], run["seed"]): run["accuracy"] for run in runs}
    expected = [
        by_model["student (distilled)", s] - by_model["student (scratch)", s] for s in (0, 7)
    ]
    assert gain["metric"] == "accuracy"
    assert gain["difference"]["values"] == pytest.approx(expected)
    assert gain["difference"]["seeds"] == 2
    assert gain["difference"]["low"] <= gain["difference"]["mean"] <= gain["difference"]["high"]


@pytest.mark.parametrize("deterministic", [True, False])
def test_prepare_turns_op_determinism_on_or_off(deterministic, tmp_path):
    set_determinism(not deterministic)
    prepare(ToyTask, _config(tmp_path, deterministic=deterministic))
    assert is_op_determinism_enabled() is deterministic


class PoolToyTask(ToyTask):
    """The toy task whose distilled students also learn on unlabelled image files."""

    def read_unlabeled(self, path):
        pixels = np.asarray(Image.open(path).convert("L").resize((2, 2)), np.float32)
        return (pixels.ravel() - 128.0) / 64.0

    def distilled(self, teacher, student, stage):
        training = super().distilled(teacher, student, stage)
        training.data = self.with_unlabeled(training.data, stage, batch_size=16)
        return training


def _frames(folder, count):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:02d}.png")
    return folder


def test_an_unlabelled_pool_reaches_the_distilled_students_only(toy_run, tmp_path):
    config, first = toy_run
    pool = _frames(tmp_path / "frames", 40)
    pooled = config.model_copy(update={"unlabeled_data": str(pool), "unlabeled_ratio": 0.5})
    # In the same folder the pool would change the distilled stages only, never the baseline.
    with pytest.raises(ConfigError, match="unlabeled_data") as refused:
        prepare(PoolToyTask, pooled)
    assert "(trained into student, student_two_phase_warmup, student_two_phase, pruned, qat)" in (
        str(refused.value)
    )
    pooled = pooled.model_copy(update={"output_dir": str(tmp_path / "pooled")})
    prepared = prepare(PoolToyTask, pooled)
    # 6 labelled batches per epoch, and 3 unlabelled ones spread among them.
    stage = Stage("student", Role.STUDENT, 1, 0.01)
    model = prepared.task.build("student", "probe")
    teacher = prepared.task.build("teacher", "probe_teacher")
    data = prepared.task.distilled(teacher, model, stage).data
    assert [float(element[2][0]) for element in data] == [1, 0, 1, 1, 0, 1, 1, 0, 1]
    report = run_pipeline(prepared)
    assert report["unlabeled"] == {"source": str(pool), "images": 40, "ratio": 0.5}
    # The teacher and the scratch baseline trained exactly as without the pool.
    rows = {row["model"]: row for row in report["rows"]}
    before = {row["model"]: row for row in first["rows"]}
    for name in ("teacher", "scratch"):
        assert report["epoch_losses"][name] == first["epoch_losses"][name]
    assert rows["student (scratch)"]["accuracy"] == before["student (scratch)"]["accuracy"]
    assert report["epoch_losses"]["student"] != first["epoch_losses"]["student"]


def test_bad_unlabelled_data_is_refused_before_any_training(tmp_path):
    (tmp_path / "empty").mkdir()
    config = _config(tmp_path / "out", unlabeled_data=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="holds no images"):
        prepare(PoolToyTask, config)
    with pytest.raises(ValueError, match="builtin is the pool of a built-in data generator"):
        prepare(PoolToyTask, _config(tmp_path / "out", unlabeled_data="builtin"))
    assert not (tmp_path / "out" / "run_state.json").exists()


def test_camera_input_is_refused_before_training_where_it_cannot_ship(tmp_path):
    config = _config(tmp_path / "out", compress={"camera_input": True})
    with pytest.raises(ConfigError, match="needs the toy task's deploy description"):
        prepare(ToyTask, config)
    assert not (tmp_path / "out" / "run_state.json").exists()
    with pytest.raises(ValueError, match="camera_input=true .* needs export=int8"):
        CompressSettings(camera_input=True, export="float32", qat_epochs=0)
