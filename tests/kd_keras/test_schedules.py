import math

import numpy as np
import pytest
import tf_keras as keras

from kd_keras import schedules
from tests.helpers import tiny_classifier, tiny_data


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
