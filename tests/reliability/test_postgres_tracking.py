"""MLflow on PostgreSQL, as teams run it: recipe upload, `upload_pending` and racing promotions.

A real PostgreSQL server (Debian's `postgresql`, which `.ci/run` installs when missing) is started
on a temporary data directory and a free loopback port, with a real `mlflow server` on top of it.
PostgreSQL refuses to run as root, so under root it runs as the `postgres` user (else `nobody`).
Without the server binaries, a non-root user to run them or the `psycopg` driver the tests skip
with the reason; everything they start is stopped at the end of the module.
"""

import contextlib
import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import ViewType

from classification.data import load_digits
from kd_keras import tracking
from recipes import classify, upload_pending

psycopg = pytest.importorskip(
    "psycopg", reason="psycopg (the MLflow server's PostgreSQL driver) is not installed"
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = "pg-student"
# test_classify's model sizes; pruning and QAT are off: this module is about the store.
TINY = [
    "--epochs",
    "2",
    "--set",
    "teacher_epochs=3",
    "--set",
    "teacher_model.width=0.5",
    "--prune",
    "0",
    "--no-qat",
    "--set",
    "int8_costs=false",
    "--set",
    "latency_runs=20",
]
UPLOADED_ACCURACY_DROP = 0.25
"""The uploaded version is the recipe's student logged again this much less accurate: the newest
version is the worse one, so a promotion race cannot end right by letting the newest win."""
RACE_MODELS = [f"pg-race-{i}" for i in range(5)]
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _stop(process: subprocess.Popen | None, first_signal: int) -> None:
    """Sends `first_signal` to the process group, then SIGKILL if it has not exited in time."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first_signal)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


def postgres_bindir() -> Path | None:
    """The directory holding `initdb` and `postgres`: `pg_config --bindir`, Debian's
    `/usr/lib/postgresql/<version>/bin` (newest first), or PATH; `None` when there is none."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            result = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            )
            if result.returncode == 0 and result.stdout.strip():
                candidates.append(Path(result.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: (len(p.parent.name), p.parent.name), reverse=True)
    candidates += [
        Path(found).resolve().parent for found in map(shutil.which, ["postgres"]) if found
    ]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    return None


def server_account() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: this process's user, or under root `postgres`, else `nobody`."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:`port`, run by `account`.

    The cluster lives in a fresh directory under the system temporary directory (pytest's own
    are private to root, which the server's user could not enter); its Unix socket too.
    """

    user = "kd"
    database = "mlflow"

    def __init__(self, bindir: Path, account: pwd.struct_passwd):
        self.bindir, self.account = bindir, account
        self.root = Path(tempfile.mkdtemp(prefix="kd-keras-postgres-"))
        os.chown(self.root, account.pw_uid, account.pw_gid)
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """The backend store URI, as teams write it (SQLAlchemy takes psycopg 3 for it)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_account(self) -> dict:
        """Popen arguments that drop root for the server's account (nothing when not root)."""
        env = {**os.environ, "HOME": str(self.root), "LC_ALL": "C"}
        if os.geteuid() != 0:
            return {"env": env, "cwd": self.root}
        ids = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        return {"env": {**env, "USER": self.account.pw_name}, "cwd": self.root, **ids}

    def start(self) -> str | None:
        """Creates the cluster and its database; `None` when it runs, else why it cannot."""
        initdb = subprocess.run(
            [self.bindir / "initdb", "-D", self.data, "-U", self.user, "--auth=trust"]
            + ["--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
            **self._as_account(),
        )
        if initdb.returncode != 0:
            said = (initdb.stdout + initdb.stderr)[-1500:]
            return f"initdb as {self.account.pw_name} failed: {said}"
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [self.bindir / "postgres", "-D", self.data, "-p", str(self.port)]
            + ["-h", "127.0.0.1", "-k", str(self.root), "-F"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._as_account(),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"postgres exited with {self.process.returncode}: {_tail(self.log, 1500)}"
            try:
                connection = psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=self.user,
                    dbname="postgres",
                    connect_timeout=2,
                )
            except psycopg.OperationalError:
                time.sleep(0.2)
                continue
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            try:
                with connection.cursor() as cursor:
                    cursor.execute(f"CREATE DATABASE {self.database}")
            finally:
                connection.close()
            return None
        return f"postgres did not accept connections within {START_TIMEOUT:g} s: {_tail(self.log)}"

    def query(self, sql: str, *args) -> list[tuple]:
        """Rows of `sql` run directly on the MLflow database (what the server really stored)."""
        connection = psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=self.database
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            connection.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), then the directory is removed."""
        _stop(self.process, signal.SIGINT)
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over `backend_uri`, serving artifacts from `root`."""

    def __init__(self, backend_uri: str, root: Path):
        self.backend_uri, self.root = backend_uri, root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {_tail(self.log)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer /health within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)


@pytest.fixture(scope="module")
def postgres():
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres); install `postgresql`")
    account = server_account()
    if account is None:
        pytest.skip("running as root with no `postgres` or `nobody` user to run PostgreSQL as")
    instance = Postgres(bindir, account)
    try:
        problem = instance.start()
        if problem is not None:
            pytest.skip(f"PostgreSQL cannot be started here: {problem}")
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    instance = MlflowServer(postgres.uri, tmp_path_factory.mktemp("mlflow-server"))
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def client(server):
    return MlflowClient(server.url)


@pytest.fixture(scope="module")
def recipe_run(server, tmp_path_factory):
    """`python -m recipes.classify` tracked to the server; its student is `MODEL` version 1."""
    output = tmp_path_factory.mktemp("classify")
    argv = [*TINY, "--output-dir", str(output), "--tracking-uri", server.url]
    assert classify.main([*argv, "--register-as", MODEL]) == 0
    return output


@pytest.fixture(scope="module")
def uploaded(recipe_run, server, tmp_path_factory):
    """A run whose store was unreachable, then sent by `upload_pending`: `MODEL` version 2.

    It reuses the recipe's student files instead of training again.
    """
    output = tmp_path_factory.mktemp("offline")
    report = json.loads((recipe_run / "report.json").read_text())
    accuracy = report["rows"][-1]["accuracy"] - UPLOADED_ACCURACY_DROP
    session = tracking.RunSession(
        output,
        tracking_uri=f"http://127.0.0.1:{_free_port()}",  # nothing listens there
        experiment="offline",
        task="classification",
        probe_timeout=0.5,
    )
    with pytest.warns(tracking.TrackingWarning, match="reaching the tracking server"):
        for step, loss in enumerate([1.5, 0.5]):
            session.log_metrics({"distilled/loss": loss}, step=step)
    with pytest.warns(tracking.TrackingWarning, match="upload them later"):
        record = session.finish(
            {"seed": 0, "epochs": 2},
            None,
            {"student": recipe_run / "student.keras"},
            tflite_path=recipe_run / "student_int8.tflite",
            register_as=MODEL,
            input_example=load_digits().x[:2],
            tflite_metrics={"accuracy": accuracy},
        )
    assert record.run_id is None and record.pending_file == output / "mlflow" / "pending.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = upload_pending.main([str(output), "--tracking-uri", server.url])
    return {
        "code": code,
        "printed": printed.getvalue(),
        "record": record,
        "accuracy": accuracy,
        "output": output,
    }


def add_version(client: MlflowClient, experiment: str, model: str, accuracy: float) -> str:
    """A finished run with `tflite_accuracy` and a model directory, registered as a new version."""
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "tflite_accuracy", accuracy)
    client.log_text(run_id, "tflite model placeholder", "tflite_model/README.txt")
    client.set_terminated(run_id)
    return tracking.register_version(client, model, run_id, "tflite_model", {"task": "test"})


RACER = textwrap.dedent(
    """
    import contextlib, io, json, sys, time
    from pathlib import Path
    from recipes import promote
    uri, role, barrier, targets = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    (barrier / role).touch()  # imports done; start together
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.005)
    spans = []
    for target in targets:
        model, version = target.split("=")
        argv = ["--model", model, "--metric", "tflite_accuracy", "--version", version]
        begin = time.time()
        with contextlib.redirect_stdout(io.StringIO()):
            code = promote.main([*argv, "--tracking-uri", uri])
        spans.append([begin, time.time(), code])
    print(json.dumps(spans))
    """
)


@pytest.fixture(scope="module")
def race(uploaded, client, server, tmp_path_factory):
    """Two `recipes.promote` processes at once: one promotes the worse version of every model
    (`MODEL` v2, the upload; `pg-race-*` v1), the other the better one."""
    experiment = client.create_experiment("race")
    for model in RACE_MODELS:
        add_version(client, experiment, model, 0.70)
        add_version(client, experiment, model, 0.90)
    targets = {
        "worse": [f"{MODEL}=2", *(f"{m}=1" for m in RACE_MODELS)],
        "better": [f"{MODEL}=1", *(f"{m}=2" for m in RACE_MODELS)],
    }
    barrier = tmp_path_factory.mktemp("barrier")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    racers = {
        role: subprocess.Popen(
            [sys.executable, "-c", RACER, server.url, role, str(barrier), *models],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for role, models in targets.items()
    }
    outputs = {role: racer.communicate(timeout=180) for role, racer in racers.items()}
    return {
        role: {"code": racers[role].returncode, "stdout": out, "stderr": err}
        for role, (out, err) in outputs.items()
    }


@pytest.mark.slow
def test_recipe_run_is_recorded_in_postgres(recipe_run, client, postgres, server):
    report = json.loads((recipe_run / "report.json").read_text())
    tracked = report["mlflow"]
    assert tracked["complete"] is True and tracked["tracking_uri"] == server.url
    run = client.get_run(tracked["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["tflite_accuracy"] == report["rows"][-1]["accuracy"]
    assert run.data.params["epochs"] == "2" and run.data.tags["task"] == "classification"
    assert len(client.get_metric_history(run.info.run_id, "teacher/loss")) == 3
    assert len(client.get_metric_history(run.info.run_id, "distilled/loss")) == 2
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert (str(version.version), version.run_id) == ("1", run.info.run_id)
    shipped = client.download_artifacts(
        run.info.run_id, "tflite_model/artifacts/student_int8.tflite"
    )
    assert Path(shipped).read_bytes() == (recipe_run / "student_int8.tflite").read_bytes()
    # Read back from PostgreSQL itself: the server really stores there.
    assert postgres.query("SELECT status FROM runs WHERE run_uuid = %s", run.info.run_id) == [
        ("FINISHED",)
    ]
    rows = postgres.query(
        "SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = %s",
        run.info.run_id,
        "teacher/loss",
    )
    assert rows == [(3,)]


@pytest.mark.slow
def test_pending_run_is_uploaded_to_postgres(uploaded, client, postgres, server):
    assert uploaded["code"] == 0
    assert not uploaded["record"].pending_file.exists()
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == "2"
    run = client.get_run(version.run_id)
    said = [line for line in uploaded["printed"].splitlines() if line.startswith("uploaded: ")]
    assert said == [
        f"uploaded: {uploaded['output']} -> run {run.info.run_id} at {server.url}, "
        f"model models:/{MODEL}/2"
    ]
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "0"
    assert run.data.metrics["tflite_accuracy"] == pytest.approx(uploaded["accuracy"])
    losses = client.get_metric_history(run.info.run_id, "distilled/loss")
    assert [(m.step, m.value) for m in losses] == [(0, 1.5), (1, 0.5)]
    stored = postgres.query(
        "SELECT version, run_id FROM model_versions WHERE name = %s ORDER BY version", MODEL
    )
    assert [number for number, _ in stored] == [1, 2] and stored[1][1] == run.info.run_id


@pytest.mark.slow
def test_racing_promotions_leave_the_better_champion(race, client):
    for racer in race.values():
        assert racer["code"] == 0, racer["stderr"][-3000:]
    worse, better = (json.loads(race[r]["stdout"].splitlines()[-1]) for r in ("worse", "better"))
    assert max(worse[0][0], better[0][0]) < min(worse[-1][1], better[-1][1])  # they overlapped
    assert [code for _, _, code in better] == [0] * (1 + len(RACE_MODELS))
    assert {code for _, _, code in worse} <= {0, 1}  # 1: the better one won meanwhile
    champions = {
        m: str(client.get_model_version_by_alias(m, "champion").version) for m in RACE_MODELS
    }
    assert champions == dict.fromkeys(RACE_MODELS, "2")
    # MODEL's better version is the older one: the recipe's run, not the later upload.
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["kd_keras.promotion.decision"] == "promoted"


@pytest.mark.slow
def test_no_run_is_left_running(recipe_run, uploaded, race, client, postgres):
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs(
        [e.experiment_id for e in experiments], run_view_type=ViewType.ALL, max_results=1000
    )
    statuses = Counter(run.info.status for run in runs)
    # The recipe's run, the uploaded one and two per race model.
    assert statuses == {"FINISHED": 2 + 2 * len(RACE_MODELS)}
    assert postgres.query("SELECT status, count(*) FROM runs GROUP BY status") == [
        ("FINISHED", 2 + 2 * len(RACE_MODELS))
    ]
