import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from kd_keras import Distiller, LogitsDistillation
from kd_keras.images import read_resized
from kd_keras.unlabeled import (
    UnlabeledPool,
    list_unlabeled_folder,
    mix_unlabeled,
    mixing_order,
    mixup_batch,
    read_unlabeled_folder,
)
from tests.helpers import tiny_classifier, tiny_data

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _write_frames(folder, count, size=(9, 7)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"frame_{index:03d}.png")


def _read(path):
    return read_resized(path, (6, 6), channels=1).astype(np.float32) / 255


@pytest.mark.parametrize(
    ("batches", "ratio", "expected"),
    [
        (4, 0.5, [0, 1, 0, 0, 1, 0]),
        (3, 2.0, [0, 1, 1, 0, 1, 1, 0, 1, 1]),
        (2, 1.0, [0, 1, 0, 1]),
        (5, 0.01, [0, 1, 0, 0, 0, 0]),
    ],
)
def test_mixing_order_spreads_the_unlabelled_batches(batches, ratio, expected):
    order = mixing_order(batches, ratio)
    assert order.tolist() == expected
    assert int(np.sum(order == 0)) == batches


def test_mixed_batches_weigh_labelled_one_and_pool_zero_and_reshuffle_per_epoch():
    x = np.arange(8, dtype=np.float32).reshape(8, 1)
    labelled = tf.data.Dataset.from_tensor_slices((x, np.arange(8))).batch(2)
    pool = UnlabeledPool(np.arange(100, 112, dtype=np.float32).reshape(12, 1), "pool", 0.5)
    mixed = mix_unlabeled(labelled, pool, batch_size=3, seed=0)
    epochs = [list(mixed) for _ in range(3)]
    first = epochs[0]
    assert [len(element) for element in first] == [3] * 6
    weights = [element[2].numpy().tolist() for element in first]
    assert weights == [[1, 1], [0, 0, 0], [1, 1], [1, 1], [0, 0, 0], [1, 1]]
    for x_batch, y_batch, weight in first:
        if weight.numpy()[0] == 0:
            assert np.all(x_batch.numpy() >= 100) and np.all(y_batch.numpy() == 0)
            assert y_batch.dtype == tf.int64
    # The labelled batches keep their order; the pool's batches differ from epoch to epoch.
    pooled = [[e[0].numpy().ravel().tolist() for e in epoch if e[2][0] == 0] for epoch in epochs]
    assert len({str(p) for p in pooled}) == 3
    again = [e[0].numpy().ravel().tolist() for e in mix_unlabeled(labelled, pool, 3, seed=0)]
    assert again == [e[0].numpy().ravel().tolist() for e in first]


def test_offline_mix_carries_the_pool_teacher_outputs():
    x = np.zeros((4, 1), np.float32)
    labelled = tf.data.Dataset.from_tensor_slices((x, np.arange(4), np.ones((4, 3)))).batch(2)
    pool = UnlabeledPool(np.full((4, 1), 5.0, np.float32), "pool", 1.0)
    cached = np.arange(12, dtype=np.float64).reshape(4, 3)
    elements = list(mix_unlabeled(labelled, pool, 2, 0, teacher_outputs=cached))
    assert [len(e) for e in elements] == [4] * 4
    pooled = [e for e in elements if e[3][0] == 0]
    outputs = np.concatenate([e[2].numpy() for e in pooled])
    assert sorted(outputs[:, 0].tolist()) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="pass both or neither"):
        mix_unlabeled(labelled, pool, 2, 0)


def test_mixup_mixes_each_image_with_the_next_by_a_beta_weight():
    x = tf.constant(np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.0, 10.0, 20.0, 30.0)]))
    mixed = mixup_batch(x, 1.0, tf.constant([3, 0], tf.int64)).numpy()
    # Every pixel of image i lies between x_i and x_{i+1}; one weight per image.
    following = np.roll(x.numpy(), -1, axis=0)
    weights = (mixed - following) / (x.numpy() - following)
    assert np.allclose(weights, weights[:, :1, :1]) and np.all((weights >= 0) & (weights <= 1))
    assert len(np.unique(np.round(weights[:, 0, 0, 0], 6))) == 4
    again = mixup_batch(x, 1.0, tf.constant([3, 0], tf.int64)).numpy()
    np.testing.assert_array_equal(again, mixed)
    other = mixup_batch(x, 1.0, tf.constant([4, 0], tf.int64)).numpy()
    assert not np.allclose(other, mixed)


def test_pool_mixup_reaches_unlabelled_batches_only_and_not_offline():
    x = np.arange(4, dtype=np.float32).reshape(4, 1)
    labelled = tf.data.Dataset.from_tensor_slices((x, np.arange(4))).batch(2)
    images = np.array([[100.0], [200.0], [300.0], [400.0]], np.float32)
    pool = UnlabeledPool(images, "pool", 1.0, mixup=0.4)
    elements = list(mix_unlabeled(labelled, pool, batch_size=2, seed=0))
    labelled_x = [e[0].numpy().ravel().tolist() for e in elements if e[2][0] == 1]
    assert labelled_x == [[0.0, 1.0], [2.0, 3.0]]
    pooled = np.concatenate([e[0].numpy().ravel() for e in elements if e[2][0] == 0])
    assert np.all((pooled >= 100) & (pooled <= 400))
    assert not set(pooled.tolist()) <= {100.0, 200.0, 300.0, 400.0}
    assert pool.summary()["mixup"] == 0.4
    cached = tf.data.Dataset.from_tensor_slices((x, np.arange(4), np.ones((4, 3)))).batch(2)
    with pytest.raises(ValueError, match="needs the teacher online"):
        mix_unlabeled(cached, pool, 2, 0, teacher_outputs=np.ones((4, 3)))


def test_read_unlabeled_folder_reads_subfolders_in_order(tmp_path):
    _write_frames(tmp_path / "pool" / "cam_b", 2)
    _write_frames(tmp_path / "pool" / "cam_a", 3)
    (tmp_path / "pool" / "notes.txt").write_text("not an image")
    files = list_unlabeled_folder(tmp_path / "pool")
    assert [f.relative_to(tmp_path / "pool").as_posix() for f in files][:2] == [
        "cam_a/frame_000.png",
        "cam_a/frame_001.png",
    ]
    pool = read_unlabeled_folder(tmp_path / "pool", _read, ratio=0.5)
    assert pool.images.shape == (5, 6, 6, 1) and pool.images.dtype == np.float32
    np.testing.assert_array_equal(pool.images[0], _read(files[0]))
    assert pool.files == tuple(files) and pool.ratio == 0.5


def test_bad_unlabeled_folders_are_refused_with_their_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="unlabeled_data='.*missing'"):
        read_unlabeled_folder(tmp_path / "missing", _read)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("frames go here")
    with pytest.raises(ValueError, match="holds no images"):
        read_unlabeled_folder(tmp_path / "empty", _read)
    _write_frames(tmp_path / "broken", 2)
    for index in range(7):
        (tmp_path / "broken" / f"bad_{index}.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"7 of the 9 unlabelled images cannot be read") as error:
        read_unlabeled_folder(tmp_path / "broken", _read)
    assert "bad_0.jpg" in str(error.value) and "and 2 more" in str(error.value)


def _distiller(kd_weight=1.0, student_weight=1.0):
    keras.utils.set_random_seed(0)
    teacher = tiny_classifier(3, 8, name="teacher")
    student = tiny_classifier(3, 4, name="student")
    distiller = Distiller(teacher, student, LogitsDistillation(2.0), kd_weight, student_weight)
    distiller.compile(keras.optimizers.Adam(0.01), loss=CE, metrics=["accuracy"])
    return distiller


def _weights(model):
    return [w.numpy().copy() for w in model.student.trainable_weights]


def test_an_unlabelled_batch_reaches_the_kd_terms_only():
    x, y = tiny_data(8)
    unlabelled = np.zeros(8, np.float32)
    # Without KD terms an unlabelled batch teaches nothing, whatever its stand-in labels are.
    distiller = _distiller(kd_weight=0.0)
    before = _weights(distiller)
    distiller.train_on_batch(x, (y + 1) % 3, sample_weight=unlabelled)
    for a, b in zip(before, _weights(distiller)):
        np.testing.assert_array_equal(a, b)

    # With them, its loss is the KD loss alone, and the labels do not change the step.
    steps = []
    for labels in (y, (y + 1) % 3):
        distiller = _distiller()
        result = distiller.train_on_batch(x, labels, sample_weight=unlabelled, return_dict=True)
        assert result["loss"] == pytest.approx(result["distillation_loss"])
        assert result["student_loss"] == 0.0
        steps.append(_weights(distiller))
    for a, b in zip(*steps):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(before, steps[0]))


def test_labelled_examples_keep_their_task_loss_beside_unlabelled_ones():
    x, y = tiny_data(8)
    weight = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32)
    distiller = _distiller()
    result = distiller.evaluate(
        x, y, sample_weight=weight, batch_size=8, return_dict=True, verbose=0
    )
    prediction = distiller.student(x).numpy()
    ce = keras.losses.sparse_categorical_crossentropy(y, prediction, from_logits=True).numpy()
    # The task loss and accuracy are those of the labelled half; KD covers every example.
    assert result["student_loss"] == pytest.approx(ce[:4].mean(), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(prediction[:4].argmax(-1) == y[:4]))
    plain = _distiller().evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    assert result["distillation_loss"] == pytest.approx(plain["distillation_loss"], rel=1e-5)
    assert result["loss"] == pytest.approx(ce[:4].sum() / 8 + plain["distillation_loss"], rel=1e-5)
