import numpy as np
import pytest

from detection.centernet import encode_targets
from detection.data import generate_shapes_dataset, load_coco_dataset
from detection.evaluation import coco_evaluate, evaluate_detector


@pytest.fixture(scope="module")
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_eval")
    paths = generate_shapes_dataset(root, num_train=1, num_val=8, image_size=64, seed=5)
    return load_coco_dataset(*paths["val"])


def test_perfect_detections_give_ap_one(val_set):
    detections = [
        {**{k: a[k] for k in ("image_id", "category_id", "bbox")}, "score": 1.0}
        for a in val_set.coco.dataset["annotations"]
    ]
    metrics = coco_evaluate(val_set.coco, detections)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)
    assert coco_evaluate(val_set.coco, [])["AP"] == 0.0
    shifted = [{**d, "bbox": [d["bbox"][0] + d["bbox"][2], *d["bbox"][1:]]} for d in detections]
    assert coco_evaluate(val_set.coco, shifted)["AP"] < 0.05


def test_perfect_model_outputs_decode_to_ap_one(val_set):
    """Outputs built from the targets go through decoding and rescaling back to AP 1."""
    stride = 4

    def outputs(record):
        targets = encode_targets(record.boxes, record.classes, (64, 64), 4, stride)
        heat = np.clip(targets["heatmap"], 1e-4, 1 - 1e-4)
        return np.log(heat / (1 - heat)), targets["size"][..., :2], targets["offset"][..., :2]

    per_image = iter([outputs(r) for r in val_set.records])

    def predictor(images):
        batch = [next(per_image) for _ in range(len(images))]
        return [np.stack(parts) for parts in zip(*batch)]

    metrics = evaluate_detector(predictor, val_set, (64, 64), batch_size=3, score_threshold=0.5)
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-6)
