import numpy as np
import pytest

from classification.config import ClassifyConfig
from classification.synthetic import SHAPES, ShapesConfig, write_shapes_folder
from classification.task import ClassificationTask
from kd_keras.config import from_dict
from kd_keras.pipeline import prepare


def test_the_shapes_folder_is_deterministic_and_its_pool_leaves_the_labels_alone(tmp_path):
    pooled = write_shapes_folder(tmp_path / "a", ShapesConfig(per_class=3, unlabeled=4))
    plain = write_shapes_folder(tmp_path / "b", ShapesConfig(per_class=3))
    assert sorted(p.name for p in (pooled / "labelled").iterdir()) == sorted(SHAPES)
    for path in sorted((plain / "labelled").rglob("*.png")):
        relative = path.relative_to(plain)
        assert path.read_bytes() == (pooled / relative).read_bytes()
    assert len(list((pooled / "unlabeled").iterdir())) == 4
    assert not (plain / "unlabeled").exists()
    with pytest.raises(FileExistsError):
        write_shapes_folder(plain, ShapesConfig(per_class=3))


def test_the_builtin_shapes_task_reads_its_folder_and_pool(tmp_path):
    settings = {
        "builtin": "shapes",
        "builtin_dir": str(tmp_path / "shapes"),
        "builtin_per_class": 4,
        "builtin_unlabeled": 5,
        "unlabeled_data": "builtin",
        "output_dir": str(tmp_path / "out"),
        "tracking": {"enabled": False},
    }
    task = prepare(ClassificationTask, from_dict(ClassifyConfig, settings)).task
    assert task.train.class_names == tuple(sorted(SHAPES))
    assert len(task.x_train) + len(task.x_test) == 24 and task.x_train.shape[1:] == (32, 32, 3)
    assert task.unlabeled.images.shape == (5, 32, 32, 3)
    assert task.description.startswith("built-in shapes on photos")
    assert task.data_fingerprint()["generator"]["unlabeled"] == 5
    assert np.bincount(np.concatenate([task.train.y, task.test.y])).tolist() == [4] * len(SHAPES)
    assert task.train.x.min() >= 0.0 and task.train.x.max() <= 1.0
