import contextlib
import io
import socket
import time

import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient
from pycocotools.coco import COCO

from detection.centernet import CenterNetDecoder, decode_detections
from detection.evaluation import coco_evaluate
from kd_keras import tracking
from recipes import promote
from reid.evaluation import evaluate_ranking
from tests.recipes.test_promote import add_version, champion, version_tags

# --- COCO metrics without detections ---


def _coco(areas, crowd=()):
    """One 200×200 image with a 10×10 box per area (only `area` sets the COCOeval bucket)."""
    annotations = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10.0 * i, 0.0, 10.0, 10.0],
            "area": float(area),
            "iscrowd": int(i in crowd),
        }
        for i, area in enumerate(areas)
    ]
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_no_detections_give_none_for_buckets_without_ground_truth():
    # Small (100 px²) boxes and a crowd large box: medium and large have no countable box.
    coco = _coco([100, 100, 20000], crowd=(2,))
    expected = {
        "AP": 0.0,
        "AP50": 0.0,
        "AP75": 0.0,
        "AP_small": 0.0,
        "AP_medium": None,
        "AP_large": None,
    }
    assert coco_evaluate(coco, []) == expected
    # COCOeval on one detection that matches nothing gives the same pattern.
    miss = {"image_id": 1, "category_id": 1, "bbox": [150.0, 150.0, 40.0, 40.0], "score": 0.9}
    assert coco_evaluate(coco, [miss]) == expected
    medium_and_large = coco_evaluate(_coco([5000, 9216.5]), [])
    assert medium_and_large["AP_small"] is None
    assert medium_and_large["AP_medium"] == 0.0 and medium_and_large["AP_large"] == 0.0


def test_no_countable_ground_truth_gives_none_everywhere():
    assert set(coco_evaluate(_coco([]), []).values()) == {None}
    assert set(coco_evaluate(_coco([100, 5000], crowd=(0, 1)), []).values()) == {None}


# --- CMC ranks beyond the curve ---


def test_rank_beyond_the_curve_raises():
    distances = np.array([[0.2, 0.1, 0.3]])
    result = evaluate_ranking(
        distances, [1], [1], np.array([1, 2, 3]), np.array([2, 2, 2]), max_rank=3
    )
    np.testing.assert_allclose(result.cmc, [0.0, 1.0, 1.0])
    assert result.rank(2) == 1.0 and result.rank(3) == 1.0
    with pytest.raises(ValueError, match=r"max_rank.*Received: k=5, max_rank=3\."):
        result.rank(5)
    with pytest.raises(ValueError, match=r"Received: k=0, max_rank=3\."):
        result.rank(0)
    assert result.as_dict() == {"rank1": 0.0, "mAP": 0.5, "valid_queries": 1}


# --- CenterNet decoders agree on plateaus and ties ---


def _plateau_outputs():
    """8×8×2 logits: a 2×2 plateau (class 0) and three separate peaks with equal logits."""
    logits = np.full((8, 8, 2), -6.0, np.float32)
    logits[1:3, 1:3, 0] = 3.0  # plateau: cells (1,1) (1,2) (2,1) (2,2)
    logits[1, 6, 1] = logits[5, 1, 1] = logits[5, 5, 0] = 2.0  # flat indices 29, 83, 90
    ys, xs = np.mgrid[0:8, 0:8].astype(np.float32)
    size = np.stack([xs + 1.0, ys + 2.0], axis=-1)  # every cell decodes to a different box
    offset = np.stack([xs / 16.0, ys / 32.0], axis=-1)
    return logits, size, offset


def _both(top_k, score_threshold=0.5):
    logits, size, offset = _plateau_outputs()
    (found,) = decode_detections(logits, size, offset, 4, top_k, score_threshold)
    layer = CenterNetDecoder(stride=4, top_k=top_k)
    boxes, scores, classes = (
        t.numpy()[0] for t in layer([tf.constant(a[None]) for a in (logits, size, offset)])
    )
    return found, boxes, scores, classes


def _box(y, x):
    """The box the cell (y, x) of `_plateau_outputs` decodes to, computed by hand."""
    _, size, offset = _plateau_outputs()
    cx, cy = (x + offset[y, x, 0]) * 4, (y + offset[y, x, 1]) * 4
    w, h = size[y, x] * 4 / 2
    return [cx - w, cy - h, cx + w, cy + h]


def test_decoders_keep_one_cell_of_a_plateau_and_order_ties_by_index():
    found, boxes, scores, classes = _both(top_k=4)
    # The plateau keeps its first cell (1,1); the equal peaks follow by flat index.
    expected_cells = [(1, 1), (1, 6), (5, 1), (5, 5)]
    np.testing.assert_array_equal(found.classes, [0, 1, 1, 0])
    np.testing.assert_array_equal(classes, found.classes)
    np.testing.assert_allclose(found.boxes, [_box(y, x) for y, x in expected_cells], rtol=1e-6)
    np.testing.assert_array_equal(boxes, found.boxes)
    sigmoid = 1 / (1 + np.exp(-np.array([3.0, 2.0, 2.0, 2.0])))
    np.testing.assert_allclose(found.scores, sigmoid, rtol=1e-6)
    np.testing.assert_allclose(scores, found.scores, rtol=1e-6)


def test_decoders_cut_equal_scores_at_top_k_by_index():
    found, boxes, scores, classes = _both(top_k=3)
    np.testing.assert_array_equal(found.classes, [0, 1, 1])  # (1,6) and (5,1) make the cut
    np.testing.assert_array_equal(classes, found.classes)
    np.testing.assert_array_equal(boxes, found.boxes)
    np.testing.assert_allclose(found.boxes[2], _box(5, 1), rtol=1e-6)
    np.testing.assert_allclose(scores, found.scores, rtol=1e-6)
    # More room than peaks: the first cell of the class-1 background plateau (flat index 1) is
    # the fifth peak, then the layer pads with score 0.
    found, boxes, scores, classes = _both(top_k=6, score_threshold=0.0)
    np.testing.assert_array_equal(found.classes, [0, 1, 1, 0, 1])
    np.testing.assert_allclose(found.boxes[4], _box(0, 0), rtol=1e-6)
    np.testing.assert_array_equal(boxes[:5], found.boxes)
    np.testing.assert_array_equal(classes[:5], found.classes)
    np.testing.assert_allclose(scores[:5], found.scores, rtol=1e-6)
    assert found.scores[4] == pytest.approx(1 / (1 + np.exp(6.0))) and scores[5] == 0.0


# --- Promotion: unreachable server, manual rollback ---


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_promote_fails_fast_when_the_server_does_not_answer(capsys):
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    code = promote.main(["--model", "m", "--metric", "accuracy", "--tracking-uri", uri])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 3 and elapsed < 10.0
    assert err.startswith("error: ") and f"tracking server at {uri}" in err
    assert "challenger" not in err


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("rollback", artifact_location=str(tmp_path / "art"))
    return {"uri": uri, "client": client, "experiment": experiment}


def test_promotion_after_manual_rollback_compares_with_the_rolled_back_champion(store):
    add_version(store, "cls", accuracy=0.80)
    assert tracking.promote("cls", "accuracy", tracking_uri=store["uri"]).promoted
    add_version(store, "cls", accuracy=0.90)
    assert tracking.promote("cls", "accuracy", tracking_uri=store["uri"]).promoted
    assert champion(store, "cls") == "2"
    store["client"].set_registered_model_alias("cls", "champion", "1")  # rollback by hand

    add_version(store, "cls", accuracy=0.85)  # beats v1, not the rolled-back v2
    decision = tracking.promote("cls", "accuracy", tracking_uri=store["uri"])
    assert decision.champion_version == "1" and decision.challenger_version == "3"
    (check,) = decision.checks
    assert (check.champion, check.challenger, check.passed) == (0.80, 0.85, True)
    assert decision.promoted and decision.reasons == () and decision.champion_after == "3"
    assert champion(store, "cls") == "3"
    tags = version_tags(store, "cls", "3")
    assert tags["kd_keras.promotion.compared_to"] == "1"
    assert "concurrent" not in tags["kd_keras.promotion.reasons"]
    assert "concurrent" not in decision.table()


def test_champion_moved_by_hand_during_promotion_is_not_overwritten(store, monkeypatch):
    from kd_keras.tracking import registry

    add_version(store, "cls", accuracy=0.80)
    assert tracking.promote("cls", "accuracy", tracking_uri=store["uri"]).promoted
    add_version(store, "cls", accuracy=0.70)  # v2: a hand-picked version, never approved
    add_version(store, "cls", accuracy=0.90)
    settle = registry._settle

    def settle_after_manual_move(client, model, *args):
        store["client"].set_registered_model_alias(model, "champion", "2")
        return settle(client, model, *args)

    monkeypatch.setattr(registry, "_settle", settle_after_manual_move)
    decision = tracking.promote("cls", "accuracy", tracking_uri=store["uri"])
    assert not decision.promoted and decision.champion_after == "2"
    assert decision.reasons == (
        "passed, but champion moved from version 1 to version 2 during this promotion; "
        "rerun it to compare with the new champion",
    )
    assert champion(store, "cls") == "2"
