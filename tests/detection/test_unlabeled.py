import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from detection.centernet.centernet_losses import retained_binary_kd, teacher_peaks
from detection.config import DetectConfig
from detection.data.synthetic_shapes import UNLABELED, generate_shapes_dataset
from detection.task import DetectionTask
from kd_keras.config import from_dict
from kd_keras.pipeline import Role, Stage, prepare


def _logits(peaks, shape=(1, 8, 8, 2)):
    logits = np.full(shape, -6.0, np.float32)
    for b, y, x, c, value in peaks:
        logits[b, y, x, c] = value
    return tf.constant(logits)


def test_teacher_peaks_count_3x3_maxima_above_the_threshold():
    # Two peaks; a neighbour of the first (lower) and a faint one (σ < 0.3) do not count.
    logits = _logits([(0, 2, 2, 0, 2.0), (0, 2, 3, 0, 1.0), (0, 6, 5, 1, 0.5), (0, 5, 0, 0, -1.5)])
    assert teacher_peaks(logits).numpy().tolist() == [2.0]


def test_an_image_without_labelled_centres_is_normalised_by_the_teacher_peaks():
    teacher = _logits(
        [(0, 2, 2, 0, 2.0), (0, 6, 5, 1, 0.5), (1, 2, 2, 0, 2.0), (1, 6, 5, 1, 0.5)], (2, 8, 8, 2)
    )
    student = tf.zeros_like(teacher)
    labels = np.zeros((2, 8, 8, 2), np.float32)
    labels[0, 2, 2, 0] = labels[0, 6, 5, 1] = 1.0  # image 0 labelled with the same 2 objects
    loss = retained_binary_kd(teacher, student, tf.constant(labels), 2.0, positive_retaining=False)
    mean = retained_binary_kd(teacher, student, None, 2.0, False, normalize="mean").numpy()
    # Both images are divided by 2 objects: the labelled centres, or the teacher's 2 peaks.
    np.testing.assert_allclose(loss.numpy(), mean * 128 / 2, rtol=1e-6)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_pool")
    generate_shapes_dataset(root, num_train=8, num_val=4, image_size=64, num_unlabeled=6)
    return root


def test_the_generator_adds_an_unlabelled_folder_and_keeps_the_annotated_images(shapes, tmp_path):
    generate_shapes_dataset(tmp_path, num_train=8, num_val=4, image_size=64)
    assert not (tmp_path / UNLABELED).exists()
    assert len(list((shapes / UNLABELED).iterdir())) == 6
    for split in ("train", "val"):
        for path in sorted((tmp_path / split).iterdir()):
            assert path.read_bytes() == (shapes / split / path.name).read_bytes()


def _settings(shapes, tmp_path, **values):
    return {
        "data": str(shapes / "train"),
        "annotations": str(shapes / "annotations" / "instances_train.json"),
        "val_data": str(shapes / "val"),
        "val_annotations": str(shapes / "annotations" / "instances_val.json"),
        "image_size": 64,
        "batch_size": 4,
        "epochs": 2,
        "output_dir": str(tmp_path),
        "unlabeled_data": str(shapes / UNLABELED),
        "teacher_model": {"width": 0.25},
        "student_model": {"width": 0.125},
        "tracking": {"enabled": False},
        **values,
    }


def test_distilled_detectors_mix_in_the_pool_and_scratch_does_not(shapes, tmp_path):
    settings = _settings(shapes, tmp_path, min_steps=0)
    task = prepare(DetectionTask, from_dict(DetectConfig, settings)).task
    assert task.unlabeled.images.shape == (6, 64, 64, 3)
    assert float(task.unlabeled.images.max()) <= 1.0
    stage = Stage("student", Role.STUDENT, 2, 0.001)
    teacher, student = task.build("teacher", "t"), task.build("student", "s")
    training = task.distilled(teacher, student, stage)
    elements = list(training.data)
    assert [float(e[2][0]) for e in elements] == [1, 0, 1, 0]
    x, y, weight = elements[1]
    assert all(float(tf.reduce_max(part)) == 0.0 for part in y)
    result = training.model.train_on_batch(x, y, sample_weight=weight, return_dict=True)
    assert np.isfinite(result["loss"])
    assert result["loss"] == pytest.approx(result["distillation_loss"], rel=1e-5)
    assert len(task.plain(task.build("student", "scratch"), stage).data.element_spec) == 2


def test_a_small_set_trains_for_min_steps_with_warmup_and_each_epoch_gets_its_pool_mix(
    shapes, tmp_path
):
    # 8 training images in batches of 4: 2 batches a pass, so 2 epochs need 5 passes for 20.
    settings = _settings(shapes, tmp_path, min_steps=20, warmup_steps=4)
    task = prepare(DetectionTask, from_dict(DetectConfig, settings)).task
    stage = Stage("scratch", Role.STUDENT, 2, 0.002)
    assert task.steps_per_epoch == 2 and task.labelled_steps(stage) == 10
    assert task.labelled_steps(Stage("pruned", Role.PRUNED, 1, 0.001)) == 2
    training = task.plain(task.build("student", "scratch"), stage)
    assert training.steps_per_epoch == 10
    assert len(list(training.data.take(25))) == 25  # a stream the epochs share
    schedule = _schedule(training.model)
    rates = [float(schedule(step)) for step in (0, 2, 4, 20)]
    assert rates[:3] == pytest.approx([0.0, 0.001, 0.002]) and rates[3] == pytest.approx(1e-4)

    teacher, student = task.build("teacher", "t"), task.build("student", "s")
    distilled = task.distilled(teacher, student, Stage("student", Role.STUDENT, 2, 0.002))
    # With the pool (ratio 1): 10 labelled and 10 unlabelled batches in each epoch.
    assert distilled.steps_per_epoch == 20
    weights = [float(e[2][0]) for e in distilled.data]
    assert weights == [1.0, 0.0] * 20
    assert float(_schedule(distilled.model)(40)) == pytest.approx(1e-4)


def _schedule(model):
    config = model.optimizer.get_config()["learning_rate"]
    return keras.optimizers.schedules.deserialize(config)
