import numpy as np

from kd_keras.pipeline import reuse_or_train_weights
from kd_keras.pipeline.run_state import RunState
from tests.helpers import tiny_classifier


def test_weights_stage_trains_once_then_loads_its_weights(tmp_path):
    calls = []

    def run(seed):
        model = tiny_classifier(3, 4, (8, 8, 1))
        state = RunState(tmp_path, {"epochs": 1})

        def train():
            calls.append(seed)
            for weight in model.weights:
                weight.assign(np.full(weight.shape, seed, weight.dtype.as_numpy_dtype))
            return {"seconds": 1.5, "loss": 0.25}

        record = reuse_or_train_weights(state, "qat", model, tmp_path / "w.weights.h5", train)
        return model, record, state

    first, record, _ = run(seed=7)
    again, reused, state = run(seed=9)
    assert calls == [7]  # the second run did not train
    assert reused == {"file": str(tmp_path / "w.weights.h5"), **record}
    assert state.reused == ["qat"]
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
