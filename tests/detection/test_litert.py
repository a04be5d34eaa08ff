import numpy as np
import pytest
import tf_keras as keras

from detection.centernet import CenterNetLoss, build_centernet, decode_detections, encode_targets
from detection.litert import LiteRTDetector
from kd_keras import compress
from kd_keras.export import to_tflite


def _iou(a, b):
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return inter / union


@pytest.mark.slow
def test_int8_tflite_in_litert_decodes_to_the_keras_boxes(tmp_path):
    keras.utils.set_random_seed(0)
    shape = (32, 32, 3)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.3, size=(2, *shape)).astype(np.float32)
    boxes = [np.array([[2.0, 3.0, 14.0, 17.0]]), np.array([[12.0, 10.0, 30.0, 30.0]])]
    classes = [np.array([0]), np.array([1])]
    for image, image_boxes in zip(x, boxes):
        for x0, y0, x1, y1 in image_boxes.astype(int):
            image[y0:y1, x0:x1] = 0.9
    targets = [encode_targets(b, c, shape[:2], 2) for b, c in zip(boxes, classes)]
    y = tuple(np.stack([t[k] for t in targets]) for k in ("heatmap", "size", "offset"))

    model = build_centernet(shape, 2, width=0.25, name="student")
    losses, weights = CenterNetLoss().per_head_losses()
    model.compile(keras.optimizers.Adam(1e-2), losses, loss_weights=weights)
    model.fit(x, y, batch_size=2, epochs=150, verbose=0)
    qat = compress.quantize_aware(model)
    qat.compile(keras.optimizers.Adam(1e-3), losses, loss_weights=weights)
    qat.fit(x, y, batch_size=2, epochs=20, verbose=0)

    path = tmp_path / "student_int8.tflite"
    to_tflite(qat, "int8", path=path)
    detector = LiteRTDetector(path)
    assert detector.output_names == ["quant_heatmap", "quant_size", "quant_offset"]
    keras_found = decode_detections(*[np.asarray(o) for o in qat(x)], score_threshold=0.3)
    lite_found = decode_detections(*detector(x), score_threshold=0.3)
    for image_boxes, ours, theirs in zip(boxes, keras_found, lite_found):
        assert len(ours) >= 1
        assert len(theirs) == len(ours)
        np.testing.assert_array_equal(theirs.classes, ours.classes)
        for a, b in zip(ours.boxes, theirs.boxes):
            assert _iou(a, b) > 0.9
        # And the trained model found the object.
        assert _iou(ours.boxes[0], image_boxes[0]) > 0.5
