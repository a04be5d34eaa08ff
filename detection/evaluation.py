"""COCO evaluation (pycocotools `COCOeval`) of detectors: Keras models or `.tflite` runners alike.

A detector is any callable `images -> (heatmap_logits, size, offset)` on float32 batches, so the
same code scores a Keras model and an int8 model running in LiteRT.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from detection.centernet.centernet_decoder import Detections, decode_detections
from detection.data.coco_dataset import CocoDataset
from detection.data.pipeline import load_images

# COCOeval.stats indices of the metrics reported.
METRICS = {"AP": 0, "AP50": 1, "AP75": 2, "AP_small": 3, "AP_medium": 4, "AP_large": 5}
# The COCOeval area range (`Params.areaRngLbl`) each metric averages over.
_AREA_LABELS = {
    "AP": "all",
    "AP50": "all",
    "AP75": "all",
    "AP_small": "small",
    "AP_medium": "medium",
    "AP_large": "large",
}

Predictor = Callable[[np.ndarray], Sequence[np.ndarray]]


def coco_evaluate(coco_gt: COCO, detections: list[dict]) -> dict[str, float | None]:
    """AP, AP50, AP75 and AP for small/medium/large objects from COCO-format detections.

    Args:
        coco_gt: the ground truth.
        detections: `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` dicts.

    Returns:
        The metrics in [0, 1]. A metric whose size bucket holds no non-crowd ground truth box
        gives `None` (COCOeval's areas: small <= 32², medium 32²..96², large >= 96², bounds
        inclusive, from each annotation's `area`); so does every metric when the ground truth
        has no non-crowd box at all. With no detections, the other metrics are 0.
    """
    image_ids = sorted(coco_gt.getImgIds())
    if not detections:
        return _without_detections(coco_gt, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    results = {}
    for name, index in METRICS.items():
        value = float(evaluator.stats[index])
        results[name] = None if value < 0 else value
    return results


def _without_detections(coco_gt: COCO, image_ids: list[int]) -> dict[str, float | None]:
    """What COCOeval reports for no detections: 0 where a bucket has ground truth, else `None`.

    COCOeval itself cannot run without detections (`loadRes` rejects an empty list).
    """
    params = Params(iouType="bbox")
    ranges = dict(zip(params.areaRngLbl, params.areaRng))
    areas = [
        annotation["area"]
        for annotation in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids))
        if not annotation.get("iscrowd", 0)
    ]
    results = {}
    for name, label in _AREA_LABELS.items():
        low, high = ranges[label]
        results[name] = 0.0 if any(low <= area <= high for area in areas) else None
    return results


def to_coco_detections(
    detections: Sequence[Detections],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    scales: Sequence[tuple[float, float]] | None = None,
) -> list[dict]:
    """COCO result dicts from decoded detections (boxes scaled back to each original image)."""
    results = []
    for index, (found, image_id) in enumerate(zip(detections, image_ids)):
        if scales is not None:
            found = found.scaled(*scales[index])
        for box, score, label in zip(found.boxes, found.scores, found.classes):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[int(label)]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return results


def keras_predictor(model) -> Predictor:
    """A `Predictor` running a Keras CenterNet model in inference mode."""

    def predict(images: np.ndarray):
        return [np.asarray(o) for o in model(images, training=False)]

    return predict


def predict_detections(
    predictor: Predictor,
    dataset: CocoDataset,
    image_size: tuple[int, int],
    batch_size: int = 16,
    stride: int = 4,
    top_k: int = 100,
    score_threshold: float = 0.01,
    images: np.ndarray | None = None,
) -> list[dict]:
    """Runs `predictor` over every image of `dataset` and returns COCO-format detections."""
    if images is None:
        images = load_images(dataset, image_size)
    scales = [(r.width / image_size[1], r.height / image_size[0]) for r in dataset.records]
    found: list[Detections] = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype(np.float32) / 255.0
        heatmap, size, offset = predictor(batch)[:3]
        found += decode_detections(heatmap, size, offset, stride, top_k, score_threshold)
    image_ids = [r.image_id for r in dataset.records]
    return to_coco_detections(found, image_ids, dataset.category_ids, scales)


def evaluate_detector(
    predictor: Predictor,
    dataset: CocoDataset,
    image_size: tuple[int, int],
    batch_size: int = 16,
    images: np.ndarray | None = None,
    **decode_kwargs,
) -> dict[str, float | None]:
    """COCOeval metrics of a detector on `dataset` (see `coco_evaluate`)."""
    detections = predict_detections(
        predictor, dataset, image_size, batch_size, images=images, **decode_kwargs
    )
    return coco_evaluate(dataset.coco, detections)
