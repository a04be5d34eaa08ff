import numpy as np
import pytest
import tf_keras as keras

from kd_keras.methods import progressive
from kd_keras.models import build_cnn_classifier, stage_outputs


@pytest.fixture()
def pair():
    keras.utils.set_random_seed(0)
    teacher = build_cnn_classifier((16, 16, 1), 4, 1.0, 2, name="teacher")
    student = build_cnn_classifier((16, 16, 1), 4, 0.25, 1, name="student")
    return teacher, student


def _weights(model):
    return {layer.name: [w.numpy().copy() for w in layer.weights] for layer in model.layers}


def _changed(before, model):
    def moved(name):
        now = model.get_layer(name).weights
        return any(not np.array_equal(v, w.numpy()) for v, w in zip(before[name], now))

    return sorted(name for name in before if moved(name))


def test_each_block_learns_its_teacher_block_with_the_earlier_ones_frozen(pair):
    teacher, student = pair
    boundaries = list(zip(stage_outputs(teacher), stage_outputs(student)))
    assert boundaries[0] == ("stage1_pool", "stage1_pool")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    teacher_before = _weights(teacher)
    for index, distiller in enumerate(progressive.block_distillers(teacher, student, boundaries)):
        before = _weights(student)
        distiller.compile(keras.optimizers.Adam(0.01))
        losses = distiller.fit(x, y, batch_size=32, epochs=4, verbose=0).history["loss"]
        assert losses[-1] < 0.7 * losses[0], index  # the block's output approaches the teacher's
        stage = f"stage{index + 1}_block1"
        assert _changed(before, student) == [f"{stage}_bn", f"{stage}_conv"]
    assert _changed(teacher_before, teacher) == []
    assert all(layer.trainable for layer in student.layers)  # ready for the end-to-end fine-tune


def test_boundaries_must_name_layers_of_the_same_resolution(pair):
    teacher, student = pair
    with pytest.raises(ValueError, match="The student has no layer 'stage9_pool'"):
        next(progressive.block_distillers(teacher, student, [("stage1_pool", "stage9_pool")]))
    with pytest.raises(ValueError, match=r"spatial sizes \(8, 8\) and \(4, 4\)"):
        progressive.check_boundaries(teacher, student, [("stage1_pool", "stage2_pool")])
