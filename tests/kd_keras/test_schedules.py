import math

import numpy as np
import pytest
import tf_keras as keras

from kd_keras import schedules
from tests.helpers import assert_config_round_trip, tiny_classifier, tiny_data


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (schedules.Constant(3.0), {0: 3.0, 50: 3.0, 10**6: 3.0}),
        (schedules.Linear(8.0, 1.0, 100), {0: 8.0, 50: 4.5, 100: 1.0, 200: 1.0}),
        (schedules.Linear(8.0, 1.0, 100, begin_step=10), {0: 8.0, 10: 8.0, 60: 4.5, 110: 1.0}),
        (schedules.Cosine(9.0, 1.0, 100), {0: 9.0, 50: 5.0, 100: 1.0, 300: 1.0}),
        (schedules.Exponential(16.0, 1.0, 100), {0: 16.0, 25: 8.0, 50: 4.0, 100: 1.0}),
        (schedules.Step([10, 20], [4.0, 2.0, 1.0]), {0: 4.0, 9: 4.0, 10: 2.0, 19: 2.0, 20: 1.0}),
    ],
    ids=["constant", "linear", "linear-begin", "cosine", "exponential", "step"],
)
def test_values_at_steps(schedule, expected):
    for step, value in expected.items():
        assert math.isclose(schedule.value_at(step), value, rel_tol=1e-5), (step, value)


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.Constant(2.0),
        schedules.Linear(4.0, 1.0, 10, 2),
        schedules.Cosine(4.0, 1.0, 10),
        schedules.Exponential(4.0, 1.0, 10),
        schedules.Step([5], [4.0, 1.0]),
    ],
)
def test_round_trip(schedule):
    config = schedule.get_config()
    assert type(schedule).from_config(config).get_config() == config
    rebuilt = schedules.get(schedules.serialize(schedule))
    assert type(rebuilt) is type(schedule) and rebuilt.get_config() == config
    assert rebuilt.value_at(7) == schedule.value_at(7)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: schedules.Linear(4.0, 1.0, 0), "decay_steps > 0"),
        (lambda: schedules.Exponential(4.0, 0.0, 10), "final_value > 0"),
        (lambda: schedules.Step([5, 3], [1.0, 2.0, 3.0]), "strictly increasing"),
        (lambda: schedules.Step([5], [1.0]), r"len\(values\) == len\(boundaries\) \+ 1"),
        (lambda: schedules.get("hot"), "Expected a number"),
    ],
)
def test_invalid_schedules_are_refused(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


@pytest.mark.parametrize(
    ("schedule", "tf_keras_class"),
    [
        (schedules.Linear(4.0, 1.0, 10, begin_step=2), keras.optimizers.schedules.PolynomialDecay),
        (schedules.Cosine(0.0, 1.0, 10), keras.optimizers.schedules.CosineDecay),
        (schedules.Exponential(4.0, 1.0, 10), keras.optimizers.schedules.ExponentialDecay),
        (
            schedules.Step([3, 6], [4.0, 2.0, 1.0]),
            keras.optimizers.schedules.PiecewiseConstantDecay,
        ),
    ],
    ids=["linear", "cosine", "exponential", "step"],
)
def test_tf_keras_subclasses_keep_our_config_and_serialization(schedule, tf_keras_class):
    assert isinstance(schedule, tf_keras_class)
    assert isinstance(schedule, schedules.Schedule)
    assert_config_round_trip(schedule)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    for step in range(12):
        value = schedule(step)
        assert value.dtype == "float32"
        assert float(rebuilt(step)) == float(value)


def test_step_switches_at_its_boundary_and_allows_no_boundary():
    schedule = schedules.Step([0, 2], [9.0, 4.0, 1.0])
    assert [schedule.value_at(s) for s in range(4)] == [4.0, 4.0, 1.0, 1.0]
    assert schedules.Step([], [3.0]).value_at(5) == 3.0


def test_ramp_endpoints_are_exact_in_float32():
    # From 0.7 to 0.1 the float32 formulas alone miss an endpoint by one ulp (the cosine ramp
    # gives 0.70000005 at its start), so this checks the pinned endpoints.
    initial, final = np.float32(0.7), np.float32(0.1)
    for cls in (schedules.Linear, schedules.Cosine, schedules.Exponential):
        schedule = cls(0.7, 0.1, 10, begin_step=3)
        assert np.float32(schedule.value_at(3)) == initial, cls
        assert np.float32(schedule.value_at(13)) == final, cls
        assert np.float32(schedule.value_at(99)) == final, cls


KINDS = ["constant", "linear", "cosine", "exponential", "step"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("total_steps", [2, 7, 50])
@pytest.mark.parametrize(("initial", "final"), [(6.0, 1.0), (0.7, 0.1), (0.3, 2.9)])
def test_from_name_starts_at_initial_and_ends_at_final_on_the_last_step(
    kind, total_steps, initial, final
):
    schedule = schedules.from_name(kind, initial, final, total_steps)
    assert isinstance(schedule, schedules.SCHEDULES[kind])
    values = np.array([schedule.value_at(s) for s in range(total_steps + 3)], np.float32)
    end = initial if kind == "constant" else final  # constant ignores final
    assert values[0] == np.float32(initial)
    assert values[total_steps - 1] == np.float32(end)
    np.testing.assert_array_equal(values[total_steps - 1 :], np.float32(end))
    if kind in ("linear", "cosine", "exponential"):
        steps = np.diff(values) * np.sign(final - initial)
        assert np.all(steps >= 0) and np.all(steps[: total_steps - 1] > 0)


@pytest.mark.parametrize(("total_steps", "boundary"), [(1, 0), (2, 1), (5, 2), (50, 25)])
def test_from_name_step_switches_at_half_the_steps(total_steps, boundary):
    schedule = schedules.from_name("step", 4.0, 1.0, total_steps)
    values = [schedule.value_at(s) for s in range(total_steps)]
    assert values == [4.0] * boundary + [1.0] * (total_steps - boundary)


def test_from_name_with_one_step_gives_final_on_that_step():
    for kind in ("linear", "cosine", "exponential", "step"):
        assert schedules.from_name(kind, 4.0, 1.0, 1).value_at(0) == 1.0, kind
    assert schedules.from_name("constant", 4.0, 1.0, 1).value_at(0) == 4.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("warm", 4.0, 1.0, 10), r"Expected kind in \('constant'.*Received: kind='warm'\."),
        (
            ("linear", 4.0, 1.0, 0),
            r"Expected an integer total_steps >= 1\. Received: total_steps=0\.",
        ),
        (("linear", 4.0, 1.0, 2.5), r"Received: total_steps=2\.5\."),
        (("linear", 4.0, 1.0, True), r"Received: total_steps=True\."),
        (("cosine", float("nan"), 1.0, 10), r"finite number for initial\. Received: initial=nan\."),
        (("linear", 4.0, "1", 10), r"finite number for final\. Received: final='1'\."),
        (
            ("exponential", 4.0, 0.0, 10),
            r"initial > 0 and final > 0 .*Received: initial=4\.0, final=0\.0\.",
        ),
    ],
)
def test_from_name_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        schedules.from_name(*arguments)


def test_callback_feeds_optimizer_step_and_temperature_is_logged():
    from kd_keras import Distiller, LogitsDistillation

    x, y = tiny_data(8)
    schedule = schedules.Linear(5.0, 1.0, decay_steps=4)
    distiller = Distiller(
        tiny_classifier(name="t"),
        tiny_classifier(name="s"),
        LogitsDistillation(schedule, name="kd"),
    )
    distiller.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    history = distiller.fit(x, y, batch_size=2, epochs=2, verbose=0)
    # Steps 0..3 in epoch 1 and 4..7 in epoch 2: the logged value is the epoch mean.
    expected_epoch1 = np.mean([schedule.value_at(s) for s in range(4)])
    logged = history.history["kd_temperature"]
    np.testing.assert_allclose(logged, [expected_epoch1, 1.0], rtol=1e-5)
    assert int(distiller.distillation_step.numpy()) == 7
