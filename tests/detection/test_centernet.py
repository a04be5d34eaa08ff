import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from detection.centernet import (
    CenterNetDecoder,
    CenterNetLoss,
    HeatmapFocalLoss,
    MaskedL1Loss,
    add_decoder,
    build_centernet,
    decode_detections,
    encode_targets,
    gaussian_radius,
    heatmap_focal_loss,
    masked_l1_loss,
)
from detection.centernet.centernet_decoder import peak_mask
from detection.centernet.centernet_heads import heatmap_prior_bias
from tests.helpers import assert_config_round_trip


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_heatmap_targets_at_known_centres():
    boxes = np.array([[10, 2, 26, 18], [40, 40, 60, 56]], np.float32)  # centres (18,10), (50,48)
    targets = encode_targets(boxes, np.array([1, 0]), (64, 64), num_classes=2, stride=4)
    heatmap = targets["heatmap"]
    assert heatmap.shape == (16, 16, 2)
    assert heatmap[2, 4, 1] == 1.0 and heatmap[12, 12, 0] == 1.0
    assert np.sum(heatmap == 1.0) == 2  # exactly one peak per object
    assert heatmap[2, 4, 0] == 0.0  # other class untouched
    # Gaussian with sigma (2r + 1) / 6 around the centre.
    radius = int(gaussian_radius(4, 4))
    sigma = (2 * radius + 1) / 6
    if radius >= 1:
        assert heatmap[2, 5, 1] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-5)
    np.testing.assert_allclose(targets["size"][2, 4], [4, 4, 1])
    np.testing.assert_allclose(targets["offset"][2, 4], [0.5, 0.5, 1])
    np.testing.assert_allclose(targets["size"][12, 12], [5, 4, 1])
    np.testing.assert_allclose(targets["offset"][12, 12], [0.5, 0.0, 1])
    assert targets["size"][..., 2].sum() == 2 and targets["offset"][..., 2].sum() == 2


def test_gaussian_radius_keeps_the_overlap():
    h, w, overlap = 20.0, 30.0, 0.7
    r = gaussian_radius(h, w, overlap)
    assert r > 0
    # Growing the box by r on every side still overlaps by at least `overlap`.
    assert h * w / ((h + 2 * r) * (w + 2 * r)) >= overlap - 1e-6
    assert (h - 2 * r) * (w - 2 * r) / (h * w) >= overlap - 1e-6
    assert gaussian_radius(2 * h, 2 * w) == pytest.approx(2 * r, rel=1e-6)


def test_focal_loss_hand_made_case():
    y = tf.constant([[[[1.0], [0.5]]]])  # one centre, one pixel at Gaussian value 0.5
    logits = tf.zeros([1, 1, 2, 1])  # p = 0.5 everywhere
    positive = 0.5**2 * math.log(2)
    negative = 0.5**4 * 0.5**2 * math.log(2)
    value = heatmap_focal_loss(y, logits)
    assert value.shape == (1,)
    assert float(value[0]) == pytest.approx(positive + negative, rel=1e-5)
    # Confident right answers cost ~0, and the loss is divided by the number of centres.
    good = tf.constant([[[[20.0], [-20.0]]]])
    assert float(heatmap_focal_loss(y, good)[0]) < 1e-6
    two = tf.constant([[[[1.0], [1.0]]]])
    assert float(heatmap_focal_loss(two, logits)[0]) == pytest.approx(positive, rel=1e-5)


def test_masked_l1_only_at_centres():
    target = np.zeros((1, 2, 2, 3), np.float32)
    target[0, 0, 0] = (3.0, 4.0, 1.0)
    prediction = np.full((1, 2, 2, 2), 10.0, np.float32)
    assert float(masked_l1_loss(target, prediction)[0]) == pytest.approx(7 + 6)
    assert float(masked_l1_loss(np.zeros_like(target), prediction)[0]) == 0.0


def test_centernet_loss_combines_heads():
    rng = np.random.default_rng(0)
    targets = encode_targets(np.array([[8, 8, 24, 30]]), np.array([0]), (32, 32), 2)
    y = {k: tf.constant(v[None]) for k, v in targets.items()}
    outputs = [tf.constant(rng.normal(size=(1, 8, 8, c)), tf.float32) for c in (2, 2, 2)]
    loss = CenterNetLoss(heatmap_weight=1.0, size_weight=0.1, offset_weight=1.0)
    expected = (
        heatmap_focal_loss(y["heatmap"], outputs[0])
        + 0.1 * masked_l1_loss(y["size"], outputs[1])
        + masked_l1_loss(y["offset"], outputs[2])
    )
    assert float(loss(y, outputs)) == pytest.approx(float(expected[0]), rel=1e-5)
    as_dict = dict(zip(("heatmap", "size", "offset"), outputs))
    assert float(loss(y, as_dict)) == pytest.approx(float(expected[0]), rel=1e-5)
    for obj in (loss, HeatmapFocalLoss(alpha=3.0), MaskedL1Loss()):
        assert_config_round_trip(obj)


def _outputs_for(boxes, classes, shape=(64, 64), num_classes=3):
    """Perfect outputs: logits from the target heatmap, sizes and offsets at centres."""
    targets = encode_targets(boxes, classes, shape, num_classes)
    heat = np.clip(targets["heatmap"], 1e-4, 1 - 1e-4)
    logits = np.log(heat / (1 - heat))
    return logits, targets["size"][..., :2], targets["offset"][..., :2]


def test_decoding_recovers_known_boxes():
    boxes = np.array([[4, 6, 20, 30], [30, 28, 62, 60], [33, 2, 45, 14]], np.float32)
    classes = np.array([2, 0, 1])
    logits, size, offset = _outputs_for(boxes, classes)
    (found,) = decode_detections(logits, size, offset, stride=4, score_threshold=0.5)
    assert len(found) == 3
    for box, label in zip(boxes, classes):
        match = [i for i in range(3) if found.classes[i] == label]
        assert len(match) == 1
        np.testing.assert_allclose(found.boxes[match[0]], box, atol=1e-4)
        assert found.scores[match[0]] == pytest.approx(1 - 1e-4, rel=1e-5)
    # The in-graph decoder gives the same top boxes.
    layer = CenterNetDecoder(stride=4, top_k=3)
    g_boxes, g_scores, g_classes = layer([tf.constant(a[None]) for a in (logits, size, offset)])
    order = np.argsort(found.classes)
    g_order = np.argsort(g_classes.numpy()[0])
    np.testing.assert_allclose(g_boxes.numpy()[0][g_order], found.boxes[order], atol=1e-4)
    assert_config_round_trip(layer)


def test_plateau_gives_one_peak():
    heat = np.zeros((4, 4, 1), np.float32)
    heat[1, 1] = heat[1, 2] = 5.0
    assert peak_mask(heat).sum() == 1  # two equal neighbours: the first is kept
    assert peak_mask(heat)[1, 1, 0]


def test_model_shapes_prior_and_in_graph_decoder():
    for kind in ("resnet", "mobilenet"):
        model = build_centernet((32, 32, 3), 3, kind, width=0.25)
        heatmap, size, offset = model(np.zeros((2, 32, 32, 3), np.float32))
        assert heatmap.shape == (2, 8, 8, 3) and size.shape == offset.shape == (2, 8, 8, 2)
        assert model.get_layer("neck").output.shape[1:3] == (8, 8)
    bias = model.get_layer("heatmap").bias.numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), 0.1, rtol=1e-5)
    assert heatmap_prior_bias(0.5) == 0.0
    decoded = add_decoder(model, top_k=5)
    boxes, scores, classes = decoded(np.zeros((1, 32, 32, 3), np.float32))
    assert boxes.shape == (1, 5, 4) and scores.shape == (1, 5) and classes.shape == (1, 5)
    with pytest.raises(ValueError, match="multiples of 16"):
        build_centernet((30, 32, 3))
    wide = build_centernet((32, 32, 3), 3, width=1.0)
    assert wide.count_params() > 4 * model.count_params()


def test_plain_model_trains_with_per_head_losses():
    keras.utils.set_random_seed(0)
    model = build_centernet((32, 32, 3), 2, width=0.25)
    losses, weights = CenterNetLoss().per_head_losses()
    model.compile(keras.optimizers.Adam(1e-2), loss=losses, loss_weights=weights)
    boxes = np.array([[4, 4, 20, 20]], np.float32)
    targets = encode_targets(boxes, np.array([1]), (32, 32), 2)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    y = tuple(np.repeat(targets[k][None], 2, axis=0) for k in ("heatmap", "size", "offset"))
    history = model.fit(x, y, epochs=8, batch_size=2, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
