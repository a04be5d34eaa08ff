import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

from kd_keras import tracking
from kd_keras.tracking import _store
from recipes import promote

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("promote", artifact_location=str(root / "artifacts"))
    return {"uri": uri, "client": client, "experiment": experiment}


def add_version(store, model: str, **metrics) -> str:
    """A finished run with `metrics` and a model directory, registered as a new version."""
    client = store["client"]
    run_id = client.create_run(store["experiment"]).info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.log_text(run_id, "tflite model placeholder", "tflite_model/README.txt")
    client.set_terminated(run_id)
    return tracking.register_version(client, model, run_id, "tflite_model", {"task": "test"})


def champion(store, model: str) -> str:
    return str(store["client"].get_model_version_by_alias(model, "champion").version)


def version_tags(store, model: str, version: str) -> dict:
    return store["client"].get_model_version(model, version).tags


GATES = ["--max-size-kb", "64", "--max-latency-ms", "5", "--min-parity", "0.98"]
GOOD = {"tflite_size_kb": 40.0, "tflite_latency_ms": 3.0, "tflite_parity": 0.99}


def run(store, *args) -> int:
    return promote.main([*args, "--tracking-uri", store["uri"]])


def test_promotion_both_ways(store, capsys):
    first = add_version(store, "cls", accuracy=0.80, **GOOD)
    assert run(store, "--model", "cls", "--metric", "accuracy", *GATES) == 0
    out = capsys.readouterr().out
    assert "no champion yet" in out and "PROMOTED: champion -> v1" in out
    assert champion(store, "cls") == first

    second = add_version(store, "cls", accuracy=0.85, **GOOD)
    assert run(store, "--model", "cls", "--metric", "accuracy", "--min-delta", "0.01", *GATES) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["accuracy"].split()[1:3] == ["0.8", "0.85"] and "pass" in lines["accuracy"]
    assert "<= 64" in lines["tflite_size_kb"] and lines["tflite_parity"].endswith("pass")
    assert champion(store, "cls") == second
    tags = version_tags(store, "cls", second)
    assert tags["kd_keras.promotion.decision"] == "promoted"
    assert tags["kd_keras.promotion.compared_to"] == first

    worse = add_version(store, "cls", accuracy=0.84, **{**GOOD, "tflite_size_kb": 80.0})
    assert run(store, "--model", "cls", "--metric", "accuracy", *GATES) == 1
    out = capsys.readouterr().out
    assert "NOT PROMOTED" in out and "FAIL" in out
    assert champion(store, "cls") == second
    tags = version_tags(store, "cls", worse)
    assert tags["kd_keras.promotion.decision"] == "refused"
    assert "accuracy 0.84 is not > champion + 0 (0.85)" in tags["kd_keras.promotion.reasons"]
    assert "tflite_size_kb 80 is not <= 64" in tags["kd_keras.promotion.reasons"]


def test_missing_values_never_promote(store, capsys):
    add_version(store, "gaps", accuracy=0.5, **GOOD)
    assert run(store, "--model", "gaps", "--metric", "accuracy") == 0
    no_latency = add_version(store, "gaps", accuracy=0.99, tflite_size_kb=10.0, tflite_parity=1.0)
    assert run(store, "--model", "gaps", "--metric", "accuracy", *GATES) == 1
    reasons = version_tags(store, "gaps", no_latency)["kd_keras.promotion.reasons"]
    assert reasons == f"challenger version {no_latency} has no tflite_latency_ms metric"
    no_metric = add_version(store, "gaps", **GOOD)
    assert run(store, "--model", "gaps", "--metric", "accuracy") == 1
    assert "has no accuracy metric" in capsys.readouterr().out
    assert version_tags(store, "gaps", no_metric)["kd_keras.promotion.decision"] == "refused"
    assert champion(store, "gaps") == "1"


def test_lower_is_better_and_already_champion(store, capsys):
    add_version(store, "err", error=0.2)
    assert run(store, "--model", "err", "--metric", "error", "--lower-is-better") == 0
    add_version(store, "err", error=0.1)
    assert run(store, "--model", "err", "--metric", "error", "--lower-is-better") == 0
    assert champion(store, "err") == "2"
    assert run(store, "--model", "err", "--metric", "error", "--lower-is-better") == 1
    assert "version 2 is already champion" in capsys.readouterr().out


def test_missing_model_is_a_clear_error(store, capsys):
    assert run(store, "--model", "nothing", "--metric", "accuracy") == 2
    assert "Model 'nothing' has no version with alias 'challenger'" in capsys.readouterr().err


RACER = textwrap.dedent(
    """
    import json, sys, time
    from kd_keras import tracking
    from pathlib import Path
    uri, version, barrier, models = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    (barrier / version).touch()  # imports done; start together
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.005)
    spans = []
    for model in models:
        begin = time.time()
        decision = tracking.promote(model, "accuracy", tracking_uri=uri, version=version)
        spans.append([begin, time.time(), decision.promoted])
    print(json.dumps(spans))
    """
)


@pytest.mark.slow
def test_racing_promotions_leave_the_better_champion(store, tmp_path):
    """Two processes promote v1 (worse) and v2 (better) of the same models at the same moment."""
    models = [f"race-{i}" for i in range(4)]
    for model in models:
        add_version(store, model, accuracy=0.70)
        add_version(store, model, accuracy=0.90)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, store["uri"], version, str(tmp_path), *models],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for version in ("1", "2")
    ]
    outputs = [racer.communicate(timeout=180) for racer in racers]
    for racer, (_, err) in zip(racers, outputs):
        assert racer.returncode == 0, err[-3000:]
    worse, better = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert max(worse[0][0], better[0][0]) < min(worse[-1][1], better[-1][1])  # they overlapped
    for model in models:
        assert champion(store, model) == "2"
    assert all(promoted for _, _, promoted in better)


class _Collides:
    """A client whose first alias write loses an insert race, as SQLite reports it."""

    def __init__(self, error: str):
        self.error, self.calls = error, []

    def set_registered_model_alias(self, name, alias, version):
        self.calls.append(version)
        if len(self.calls) == 1:
            raise RuntimeError(self.error)
        return version

    def delete_registered_model(self, name):
        self.calls.append(name)
        raise RuntimeError(self.error)


@pytest.mark.parametrize(
    "collision",
    [
        "(sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_aliases.name",
        "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"registered_model_alias_pk"',
    ],
)
def test_a_lost_alias_insert_race_is_retried_and_other_errors_are_not(collision):
    client = _Collides(collision)
    retrying = _store.LockRetryingClient(client, pause=0.0)
    assert retrying.set_registered_model_alias("m", "champion", "2") == "2"
    assert client.calls == ["2", "2"]
    # The same message from a call that is not an upsert is a real error: raised at once.
    client.calls.clear()
    with pytest.raises(RuntimeError, match="unique constraint|UNIQUE constraint"):
        retrying.delete_registered_model("m")
    assert client.calls == ["m"]
