"""The headline metric against size and extra pictures, logged to a real local MLflow store."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient
from PIL import Image

from kd_keras import tracking
from kd_keras.tracking import plots
from tests.helpers import tiny_classifier


@pytest.fixture
def store(tmp_path):
    return {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifacts": str(tmp_path / "artifacts")}


@pytest.fixture
def plotted(monkeypatch):
    """Records the points and metric each `metric_vs_size` call draws."""
    calls = []
    draw = plots.metric_vs_size

    def recording(points, path, metric="accuracy"):
        calls.append({"points": list(points), "path": Path(path), "metric": metric})
        return draw(points, path, metric)

    monkeypatch.setattr(plots, "metric_vs_size", recording)
    return calls


def finish(store, output, report, **kwargs):
    session = tracking.RunSession(
        output,
        tracking_uri=store["uri"],
        experiment="plots",
        task=report.get("task"),
        artifact_location=store["artifacts"],
    )
    return session.finish({"epochs": 1}, report, **kwargs)


def artifacts(client, run_id, path=None) -> set[str]:
    names = set()
    for item in client.list_artifacts(run_id, path):
        names |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return names


def test_detection_report_gets_an_ap_plot(store, tmp_path, plotted):
    report = {
        "task": "detection",
        "rows": [
            {"model": "teacher", "AP": 0.6, "AP50": 0.9, "size_bytes": 40_000},
            {"model": "student (distilled)", "AP": 0.4, "AP50": 0.7, "size_bytes": 9_000},
        ],
    }
    record = finish(store, tmp_path / "run", report, headline="AP")
    assert record.complete and record.not_logged == []
    client = MlflowClient(store["uri"])
    run = client.get_run(record.run_id)
    assert run.data.tags[tracking.runs.HEADLINE_TAG] == "AP"
    files = artifacts(client, record.run_id)
    assert "plots/AP_vs_size.png" in files and "plots/accuracy_vs_size.png" not in files
    downloaded = client.download_artifacts(record.run_id, "plots/AP_vs_size.png")
    assert Image.open(downloaded).format == "PNG"
    (call,) = plotted
    assert call["metric"] == "AP"
    assert call["points"] == [("teacher", 40_000.0, 0.6), ("student (distilled)", 9_000.0, 0.4)]


def test_reid_report_gets_a_map_plot_with_the_int8_point(store, tmp_path, plotted):
    model = tiny_classifier(3, 4, (8, 8, 1))
    tflite = tmp_path / "student.tflite"
    tflite.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    report = {
        "task": "reid",
        "rows": [
            {"model": "teacher", "mAP": 0.8, "rank1": 0.9, "size_bytes": 50_000},
            {"model": "student", "mAP": 0.5, "rank1": 0.7, "size_bytes": 12_000},
        ],
    }
    record = finish(
        store,
        tmp_path / "run",
        report,
        tflite_path=tflite,
        input_example=np.zeros((1, 8, 8, 1), np.float32),
        tflite_metrics={"mAP": 0.45, "rank1": 0.66},
        headline="mAP",
    )
    assert record.complete and record.not_logged == []
    client = MlflowClient(store["uri"])
    assert client.get_run(record.run_id).data.tags["kd_keras.headline_metric"] == "mAP"
    assert "plots/mAP_vs_size.png" in artifacts(client, record.run_id)
    (call,) = plotted
    assert call["points"][-1] == ("int8 tflite", float(tflite.stat().st_size), 0.45)
    assert [p[0] for p in call["points"]] == ["teacher", "student", "int8 tflite"]


def test_undefined_ap_row_is_left_out_of_the_plot(store, tmp_path, plotted):
    report = {
        "task": "detection",
        "rows": [
            {"model": "teacher", "AP": 0.6, "size_bytes": 40_000},
            {"model": "empty split", "AP": None, "size_bytes": 9_000},
            {"model": "diverged", "AP": float("nan"), "size_bytes": 8_000},
            {"model": "student", "AP": 0.3, "size_bytes": 9_000},
        ],
    }
    record = finish(store, tmp_path / "run", report, headline="AP")
    assert record.complete and record.not_logged == []
    assert "plots/AP_vs_size.png" in artifacts(MlflowClient(store["uri"]), record.run_id)
    (call,) = plotted
    assert [p[0] for p in call["points"]] == ["teacher", "student"]


def test_default_headline_keeps_the_accuracy_plot(store, tmp_path):
    report = {"rows": [{"model": "student", "accuracy": 0.9, "size_bytes": 9_000}]}
    record = tracking.record_run(
        {"epochs": 1},
        report,
        None,
        output_dir=tmp_path / "run",
        tracking_uri=store["uri"],
        experiment="plots",
    )
    client = MlflowClient(store["uri"])
    assert client.get_run(record.run_id).data.tags["kd_keras.headline_metric"] == "accuracy"
    assert "plots/accuracy_vs_size.png" in artifacts(client, record.run_id)


def test_record_run_passes_the_headline(store, tmp_path):
    report = {"rows": [{"model": "student", "rank1": 0.7, "size_bytes": 9_000}]}
    record = tracking.record_run(
        {"epochs": 1},
        report,
        None,
        output_dir=tmp_path / "run",
        tracking_uri=store["uri"],
        experiment="plots",
        headline="rank1",
    )
    client = MlflowClient(store["uri"])
    assert client.get_run(record.run_id).data.tags["kd_keras.headline_metric"] == "rank1"
    assert "plots/rank1_vs_size.png" in artifacts(client, record.run_id)


def test_images_are_logged_and_a_missing_one_is_reported(store, tmp_path):
    picture = tmp_path / "detections.png"
    Image.fromarray(np.full((4, 6, 3), 200, np.uint8)).save(picture)
    ghost = tmp_path / "heatmaps.png"
    with pytest.warns(tracking.TrackingWarning, match="image 'heatmaps' not found"):
        record = finish(
            store,
            tmp_path / "run",
            {"rows": []},
            images={"detections": picture, "heatmaps": str(ghost)},
        )
    assert record.complete and record.not_logged == [f"image 'heatmaps' not found at {ghost}"]
    client = MlflowClient(store["uri"])
    assert "images/detections.png" in artifacts(client, record.run_id)
    downloaded = client.download_artifacts(record.run_id, "images/detections.png")
    assert Path(downloaded).read_bytes() == picture.read_bytes()
    assert client.get_run(record.run_id).info.status == "FINISHED"


def test_plots_leave_the_global_backend_alone(tmp_path):
    """A user's backend, chosen before kd_keras is imported, survives the import and every plot."""
    import importlib

    import matplotlib

    from kd_keras.compress import select

    before = matplotlib.get_backend()
    try:
        matplotlib.use("svg")
        importlib.reload(plots)  # what importing it does
        plots.metric_vs_size([("a", 2048, 0.5)], tmp_path / "size.png")
        plots.training_curves([["teacher/loss", 1.0, 0, 0]], tmp_path / "curves.png")
        select.save_curve(select.SparsityCurve((0.0, 0.5), (0.9, 0.8), 0.5, "knee"), tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("size.png", "curves.png"))
    assert (tmp_path / "sparsity_curve.png").stat().st_size > 1000
