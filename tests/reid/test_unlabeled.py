import numpy as np
import pytest

from kd_keras.config import from_dict
from kd_keras.pipeline import Role, Stage, prepare
from reid.config import ReIDConfig
from reid.synthetic import UNLABELED, SyntheticConfig, write_synthetic_market1501
from reid.task import ReIDTask
from tests.reid.test_market1501 import TINY

DATA = TINY


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid_pool") / "market"
    return write_synthetic_market1501(root, SyntheticConfig(**{**vars(DATA), "unlabeled": 10}))


def test_the_generator_writes_unlabelled_crops_without_changing_the_labelled_ones(market, tmp_path):
    frames = sorted((market / UNLABELED).iterdir())
    assert [f.name for f in frames[:2]] == ["frame_00000.jpg", "frame_00001.jpg"]
    assert len(frames) == 10
    plain = write_synthetic_market1501(tmp_path / "plain", DATA)
    assert not (plain / UNLABELED).exists()
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        names = sorted(p.name for p in (plain / split).iterdir())
        assert names == sorted(p.name for p in (market / split).iterdir())
        for name in names:
            assert (plain / split / name).read_bytes() == (market / split / name).read_bytes()


def _task(market, tmp_path, **values):
    settings = {
        "data": str(market),
        "image_height": 16,
        "image_width": 8,
        "p": 2,
        "k": 2,
        "epochs": 2,
        "steps_per_epoch": 4,
        "output_dir": str(tmp_path),
        "unlabeled_data": str(market / UNLABELED),
        "unlabeled_ratio": 0.5,
        "tracking": {"enabled": False},
        **values,
    }
    return prepare(ReIDTask, from_dict(ReIDConfig, settings)).task


def test_distilled_epochs_mix_in_the_pool_and_its_batches_stay_finite(market, tmp_path):
    task = _task(market, tmp_path)
    assert task.unlabeled.images.shape == (10, 16, 8, 3)
    assert task.batches_per_epoch(4) == 6
    stage = Stage("KD_dynamic_T_0", Role.STUDENT, 2, 0.001, variant=2.0)
    teacher, student = task.build("teacher", "t"), task.build("student", "s")
    training = task.distilled(teacher, student, stage)
    assert training.steps_per_epoch == 6
    elements = list(training.data)
    # Two epochs of 4 labelled P×K batches, each with 2 unlabelled ones of 4 crops among them.
    assert [float(e[2][0]) for e in elements] == [1, 0, 1, 1, 0, 1] * 2
    assert all(len(e[0]) == 4 for e in elements)
    # An unlabelled batch (all stand-in labels equal) teaches through KD alone, finitely.
    x, y, weight = elements[1]
    result = training.model.train_on_batch(x, y, sample_weight=weight, return_dict=True)
    assert np.isfinite(result["loss"]) and result["student_loss"] == 0.0
    assert result["loss"] == pytest.approx(result["distillation_loss"])
    assert all(np.all(np.isfinite(w.numpy())) for w in student.weights)
    # The scratch baseline never sees the pool; the builtin pool needs the built-in data.
    assert len(task.plain(task.build("student", "scratch"), stage).data.element_spec) == 2
    with pytest.raises(ValueError, match="builtin is the pool of a built-in data generator"):
        _task(market, tmp_path / "again", unlabeled_data="builtin")
