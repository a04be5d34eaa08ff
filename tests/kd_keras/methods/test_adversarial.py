import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kd_keras import Distiller, LogitsDistillation, compress, schedules
from kd_keras.methods import offline
from kd_keras.methods.adversarial import AdversarialDistiller, adversarial_accuracy, fgsm, pgd
from tests.helpers import tiny_classifier

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
EPSILON = 0.1
WEAK = 24  # non-robust features


def _ce(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _task(n: int, seed: int):
    """Two classes in [0, 1]^25: one robust feature, right 90% of the time, and 24 weak ones.

    Feature 0 sits 0.25 from 0.5 on the side of the label (flipped for 10% of the examples); each
    weak feature is shifted by only ±0.05 (< ε = 0.1) but together they give ~98% accuracy. A
    standard model relies on the weak features, which an ε-attack flips; a robust one can only use
    feature 0 (Tsipras et al., "Robustness May Be at Odds with Accuracy", 2019).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = 2.0 * y - 1.0
    agrees = np.where(rng.random(n) < 0.9, 1.0, -1.0)
    robust = 0.5 + 0.25 * sign * agrees + rng.normal(0.0, 0.03, n)
    weak = 0.5 + 0.05 * sign[:, None] + rng.normal(0.0, 0.1, (n, WEAK))
    x = np.clip(np.concatenate([robust[:, None], weak], axis=1), 0.0, 1.0)
    return x.astype(np.float32), y.astype(np.int64)


def _mlp(name: str, width: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((WEAK + 1,))
    hidden = keras.layers.Dense(width, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden), name=name)


@pytest.fixture(scope="module")
def task():
    x, y = _task(1024, seed=0)
    x_test, y_test = _task(512, seed=1)
    teacher = _mlp("teacher", 16, seed=0)
    teacher.compile(keras.optimizers.Adam(0.02), CE)
    teacher.fit(x, y, batch_size=64, epochs=30, verbose=0)
    return teacher, x, y, x_test, y_test


def _clean_accuracy(model, x, y) -> float:
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def test_attacks_stay_in_the_ball_and_the_range(task):
    teacher, _, _, x, y = task
    x, y = x[:64], y[:64]
    graph_pgd = tf.function(lambda v: pgd(teacher, v, y, _ce, EPSILON, steps=3, seed=5))
    for adversarial in (
        fgsm(teacher, x, y, _ce, EPSILON),
        pgd(teacher, x, y, _ce, EPSILON, steps=3, seed=5),
        pgd(teacher, x, y, _ce, 0.3, step_size=0.2, steps=2, random_start=False),
        graph_pgd(tf.constant(x)),
    ):
        adversarial = adversarial.numpy()
        assert adversarial.shape == x.shape and adversarial.dtype == np.float32
        assert np.abs(adversarial - x).max() <= 0.3 + 1e-6
        assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    eager = pgd(teacher, x, y, _ce, EPSILON, steps=3, seed=5).numpy()
    assert np.abs(eager - x).max() <= EPSILON + 1e-6
    assert np.abs(eager - x).max() > 0.9 * EPSILON  # it does move, to the ball's surface
    np.testing.assert_allclose(graph_pgd(tf.constant(x)).numpy(), eager, atol=1e-6)
    np.testing.assert_array_equal(pgd(teacher, x, y, _ce, 0.0).numpy(), x)
    np.testing.assert_array_equal(fgsm(teacher, x, y, _ce, 0.0).numpy(), x)


def test_pgd_raises_the_loss_more_than_random_noise(task):
    teacher, _, _, x, y = task
    rng = np.random.default_rng(0)
    noise = rng.choice([-EPSILON, EPSILON], size=x.shape).astype(np.float32)
    random = np.clip(x + noise, 0.0, 1.0)
    adversarial = pgd(teacher, x, y, _ce, EPSILON, steps=10, seed=0)
    clean_loss, random_loss, pgd_loss = (
        float(np.mean(_ce(y, teacher(v, training=False)))) for v in (x, random, adversarial)
    )
    fgsm_loss = float(np.mean(_ce(y, teacher(fgsm(teacher, x, y, _ce, EPSILON)))))
    assert pgd_loss >= random_loss
    assert pgd_loss >= fgsm_loss > clean_loss
    assert pgd_loss > clean_loss + 1.0


def test_adversarial_accuracy_is_below_clean_and_equal_at_epsilon_zero(task):
    teacher, _, _, x, y = task
    clean = _clean_accuracy(teacher, x, y)
    assert clean > 0.95
    assert adversarial_accuracy(teacher, x, y, 0.0, batch_size=100) == clean
    robust = adversarial_accuracy(teacher, x, y, EPSILON, steps=5, batch_size=100)
    assert robust <= adversarial_accuracy(teacher, x, y, EPSILON, attack="fgsm") <= clean
    assert robust < clean - 0.5  # the teacher leans on the weak features
    assert adversarial_accuracy(teacher, x, y, EPSILON, steps=5, batch_size=100) == robust
    # Restricting to (reordered) output columns: the labels index class_indices.
    swapped = adversarial_accuracy(teacher, x, 1 - y, EPSILON, steps=5, class_indices=[1, 0])
    assert swapped == pytest.approx(robust, abs=0.02)
    assert adversarial_accuracy(teacher, x, y, 0.0, class_indices=[0, 1]) == clean


def _one_step(distiller_cls, teacher, student, x, y, **kwargs):
    terms = LogitsDistillation(schedules.Linear(3.0, 1.0, 10), name="kd")
    distiller = distiller_cls(teacher, student, terms, 0.7, 0.3, **kwargs)
    distiller.compile(keras.optimizers.SGD(0.5), loss=CE, metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history
    return history, student.get_weights()


def _tiny_pair():
    keras.utils.set_random_seed(0)
    teacher = tiny_classifier(3, 8, name="teacher")
    student = tiny_classifier(3, 4, name="student")
    return teacher, student


def _images(n: int = 8):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 6, 6, 1)).astype(np.float32)
    return x, rng.integers(0, 3, n).astype(np.int64)


def test_epsilon_zero_step_equals_distiller_step():
    x, y = _images()
    teacher, student = _tiny_pair()
    start = student.get_weights()
    expected_history, expected = _one_step(Distiller, teacher, student, x, y)
    student.set_weights(start)
    history, weights = _one_step(AdversarialDistiller, teacher, student, x, y, epsilon=0.0)
    assert set(history) == set(expected_history)
    assert {"loss", "student_loss", "distillation_loss", "kd_temperature"} <= set(history)
    for key in expected_history:
        np.testing.assert_allclose(history[key], expected_history[key], rtol=1e-6)
    for a, b in zip(expected, weights):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    student.set_weights(start)
    _, attacked = _one_step(AdversarialDistiller, teacher, student, x, y, epsilon=0.1)
    assert any(not np.allclose(a, b) for a, b in zip(expected, attacked))


def test_adversarial_weight_mixes_clean_and_adversarial_updates():
    # FGSM is deterministic and the loss is linear in w, so one SGD update is too.
    x, y = _images()
    teacher, student = _tiny_pair()
    start = student.get_weights()
    updates = {}
    for weight in (0.0, 0.5, 1.0):
        student.set_weights(start)
        _, after = _one_step(
            AdversarialDistiller,
            teacher,
            student,
            x,
            y,
            epsilon=0.1,
            attack="fgsm",
            adversarial_weight=weight,
        )
        updates[weight] = [b - a for a, b in zip(start, after)]
    for mixed, clean, adversarial in zip(updates[0.5], updates[0.0], updates[1.0]):
        np.testing.assert_allclose(mixed, 0.5 * (clean + adversarial), rtol=1e-4, atol=1e-6)


def test_offline_cache_gives_the_online_step():
    x, y = _images()
    teacher, student = _tiny_pair()
    start = student.get_weights()
    _, online = _one_step(AdversarialDistiller, teacher, student, x, y, epsilon=0.1, attack="fgsm")
    student.set_weights(start)
    cache = offline.compute_teacher_outputs(teacher, x)
    distiller = AdversarialDistiller(
        None,
        student,
        LogitsDistillation(schedules.Linear(3.0, 1.0, 10), name="kd"),
        0.7,
        0.3,
        teacher_output_shape=cache.output_shape,
        epsilon=0.1,
        attack="fgsm",
    )
    distiller.compile(keras.optimizers.SGD(0.5), loss=CE)
    distiller.fit(offline.offline_dataset(x, y, cache, len(x), shuffle=False), verbose=0)
    for a, b in zip(online, student.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_adversarial_distillation_gives_a_more_robust_student(task):
    teacher, x, y, x_test, y_test = task
    start = _mlp("student", 8, seed=1).get_weights()
    results = {}
    for kind in ("plain", "adversarial"):
        student = _mlp("student", 8, seed=1)
        student.set_weights(start)
        term = LogitsDistillation(2.0)
        if kind == "plain":
            distiller = Distiller(teacher, student, term, 0.5, 0.5)
        else:
            # Half the loss on clean inputs keeps the start off the constant-prediction plateau
            # that purely adversarial training of a small ReLU net can fall into.
            distiller = AdversarialDistiller(
                teacher, student, term, 0.5, 0.5, epsilon=EPSILON, steps=5, adversarial_weight=0.5
            )
        distiller.compile(keras.optimizers.Adam(0.05), loss=CE)
        keras.utils.set_random_seed(2)
        distiller.fit(x, y, batch_size=64, epochs=10, verbose=0)
        results[kind] = (
            _clean_accuracy(student, x_test, y_test),
            adversarial_accuracy(student, x_test, y_test, EPSILON, steps=10),
        )
    (plain_clean, plain_robust), (adv_clean, adv_robust) = results["plain"], results["adversarial"]
    print(f"clean/PGD accuracy: plain {results['plain']}, adversarial {results['adversarial']}")
    assert adv_robust >= plain_robust + 0.3
    assert adv_robust >= 0.8  # feature 0 survives ε = 0.1 and is right 90% of the time
    assert adv_clean >= 0.85
    assert plain_clean >= adv_clean - 0.01


def test_pruned_student_trains_and_reaches_its_sparsity(task):
    teacher, x, y, x_test, y_test = task
    pruned = compress.prune(_mlp("student", 8, seed=1), 0.5, frequency=1)
    distiller = AdversarialDistiller(
        teacher, pruned, LogitsDistillation(2.0, name="kd"), 0.5, 0.5, epsilon=EPSILON, steps=3
    )
    distiller.compile(keras.optimizers.Adam(0.02), loss=CE, metrics=["accuracy"])
    callbacks = [compress.UpdatePruningStep()]
    fitted = distiller.fit(x[:256], y[:256], 64, epochs=2, callbacks=callbacks, verbose=0)
    history = fitted.history
    assert {"loss", "student_loss", "distillation_loss", "kd_temperature", "accuracy"} <= set(
        history
    )
    assert all(np.isfinite(values).all() for values in history.values())
    stripped = compress.strip(distiller)
    assert compress.sparsity_report(stripped)["total"] == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(
        stripped.predict(x_test, verbose=0), distiller.predict(x_test, verbose=0), atol=1e-5
    )
    assert 0.0 <= adversarial_accuracy(stripped, x_test, y_test, EPSILON, steps=3) <= 1.0


def test_config_round_trips_the_attack():
    teacher, student = _tiny_pair()
    distiller = AdversarialDistiller(
        teacher, student, LogitsDistillation(2.0), epsilon=0.03, steps=7, attack="fgsm"
    )
    config = distiller.get_config()
    assert {k: config[k] for k in ("epsilon", "steps", "attack", "adversarial_weight")} == {
        "epsilon": 0.03,
        "steps": 7,
        "attack": "fgsm",
        "adversarial_weight": 1.0,
    }
    rebuilt = AdversarialDistiller.from_config(config)
    assert rebuilt.get_config()["clip"] == config["clip"] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": -0.1}, "Received: epsilon=-0.1"),
        ({"epsilon": 0.1, "steps": 0}, "Received: steps=0"),
        ({"epsilon": 0.1, "attack": "cw"}, "Received: attack='cw'"),
        ({"epsilon": 0.1, "step_size": 0.0}, "Received: step_size=0.0"),
        ({"epsilon": 0.1, "adversarial_weight": 1.5}, "Received: adversarial_weight=1.5"),
        ({"epsilon": 0.1, "clip": (1.0, 0.0)}, r"Received: clip=\(1.0, 0.0\)"),
    ],
    ids=["epsilon", "steps", "attack", "step-size", "weight", "clip"],
)
def test_bad_distiller_arguments_are_refused(kwargs, message):
    teacher, student = _tiny_pair()
    with pytest.raises(ValueError, match=message):
        AdversarialDistiller(teacher, student, LogitsDistillation(), **kwargs)


def test_bad_attack_arguments_are_refused():
    model = tiny_classifier(3)
    x, y = _images(2)
    with pytest.raises(ValueError, match="Received: epsilon=-1"):
        pgd(model, x, y, _ce, -1)
    with pytest.raises(ValueError, match="Received: epsilon=-1"):
        fgsm(model, x, y, _ce, -1)
    with pytest.raises(ValueError, match="Received: steps=0"):
        pgd(model, x, y, _ce, 0.1, steps=0)
    with pytest.raises(ValueError, match="Received: attack='cw'"):
        adversarial_accuracy(model, x, y, 0.1, attack="cw")
    with pytest.raises(ValueError, match="Received: steps=0"):
        adversarial_accuracy(model, x, y, 0.1, steps=0)
    with pytest.raises(ValueError, match="2 inputs and 3 labels"):
        adversarial_accuracy(model, x, np.zeros(3, np.int64), 0.1)
    with pytest.raises(TypeError, match="Expected floating-point inputs"):
        pgd(model, np.zeros((2, 6, 6, 1), np.int32), y, _ce, 0.1)
