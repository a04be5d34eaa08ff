import numpy as np
import pytest
import tf_keras as keras
from PIL import Image

from detection.centernet import Detections, build_centernet
from detection.data import generate_shapes_dataset, load_coco_dataset, load_images
from detection.evaluation import keras_predictor
from detection.visualize import (
    DPI,
    GROUND_TRUTH_COLOUR,
    MODEL_COLOURS,
    PANEL_INCHES,
    detection_pictures,
    draw_detections,
    save_detection_grid,
    save_heatmap_grid,
)

PANEL = int(PANEL_INCHES * DPI)
CLASSES = ("circle", "square")


def outline_mask(shape, x0, y0, x1, y1):
    """The pixels of the outline of box [x0, x1) x [y0, y1), one pixel wide."""
    mask = np.zeros(shape, bool)
    mask[y0, x0:x1] = mask[y1 - 1, x0:x1] = True
    mask[y0:y1, x0] = mask[y0:y1, x1 - 1] = True
    return mask


def detections(*boxes_and_scores):
    boxes = np.array([b for b, _ in boxes_and_scores], np.float32).reshape(-1, 4)
    scores = np.array([s for _, s in boxes_and_scores], np.float32)
    return Detections(boxes, scores, np.zeros(len(scores), np.int64))


def images(n, size=32):
    return np.random.default_rng(0).integers(0, 100, size=(n, size, size, 3), dtype=np.uint8)


def test_draw_changes_exactly_the_outline_in_the_model_colour():
    image = images(1)[0]
    found = detections(([4.0, 6.0, 20.0, 26.0], 0.9), ([1.0, 1.0, 30.0, 30.0], 0.1))
    drawn = draw_detections(image, {"student": found}, CLASSES, score_threshold=0.3)
    assert drawn.dtype == np.uint8 and drawn.shape[0] > 32  # the legend strip below
    picture = drawn[:32, :32]
    changed = np.any(picture != image, axis=-1)
    mask = outline_mask((32, 32), 4, 6, 20, 26)
    np.testing.assert_array_equal(changed, mask)  # the 0.1 box is under the threshold
    assert np.all(picture[mask] == MODEL_COLOURS[0])
    np.testing.assert_array_equal(image, images(1)[0])  # the input is left as it was
    bare = draw_detections(image, {"student": found}, CLASSES, legend=False)
    np.testing.assert_array_equal(bare, picture)


def test_draw_gives_each_model_and_the_ground_truth_its_colour():
    image = np.zeros((32, 32, 3), np.uint8)
    boxes_by_model = {
        "teacher": detections(([2.0, 2.0, 10.0, 10.0], 0.8)),
        "int8": (np.array([[20.0, 20.0, 28.0, 30.0]]), np.array([0.5]), np.array([1])),
    }
    drawn = draw_detections(
        image, boxes_by_model, CLASSES, ground_truth=(np.array([[12.0, 3.0, 18.0, 9.0]]), [1])
    )[:32, :32]
    for colour, box in [
        (MODEL_COLOURS[0], (2, 2, 10, 10)),
        (MODEL_COLOURS[1], (20, 20, 28, 30)),
        (GROUND_TRUTH_COLOUR, (12, 3, 18, 9)),
    ]:
        mask = outline_mask((32, 32), *box)
        assert np.all(drawn[mask] == colour)
    assert np.count_nonzero(np.any(drawn != 0, axis=-1)) == sum(
        outline_mask((32, 32), *b).sum() for b in [(2, 2, 10, 10), (20, 20, 28, 30), (12, 3, 18, 9)]
    )


def test_draw_rejects_a_float_image():
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((8, 8, 3), np.float32), {}, CLASSES)


def test_detection_grid_has_one_panel_per_image_and_model(tmp_path):
    found = detections(([4.0, 6.0, 20.0, 26.0], 0.9))
    truth = [np.array([[3.0, 5.0, 21.0, 27.0]])] * 8
    small = save_detection_grid(
        tmp_path / "small.png", images(2), truth, {"student": [found] * 2}, CLASSES
    )
    models = {"teacher": [found] * 8, "student": [found] * 8, "int8": [found] * 8}
    large = save_detection_grid(tmp_path / "large.png", images(8), truth, models, CLASSES, 4)
    with Image.open(small) as picture:
        assert picture.format == "PNG" and picture.size == (PANEL, 2 * PANEL)
    with Image.open(large) as picture:
        assert picture.size == (3 * PANEL, 4 * PANEL)  # max_images=4 of 8
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left
    with pytest.raises(ValueError, match="one entry per image"):
        save_detection_grid(tmp_path / "x.png", images(3), None, {"student": [found]}, CLASSES)


def test_heatmap_grid_shows_the_peak(tmp_path):
    heatmaps = np.full((2, 8, 8, 2), -10.0, np.float32)
    flat = save_heatmap_grid(tmp_path / "flat.png", images(2), {"student": heatmaps.copy()})
    heatmaps[0, 2, 5, 1] = 10.0  # one sure object of class 1 in the first image
    path = save_heatmap_grid(
        tmp_path / "heatmaps.png", images(2), {"teacher": heatmaps, "student": heatmaps}
    )
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size == (2 * PANEL, 2 * PANEL)
    with Image.open(flat) as picture:
        assert picture.size == (PANEL, 2 * PANEL)
    peak = save_heatmap_grid(tmp_path / "peak.png", images(2), {"student": heatmaps})
    assert not np.array_equal(np.asarray(Image.open(peak)), np.asarray(Image.open(flat)))


def test_detection_pictures_of_a_centernet(tmp_path):
    paths = generate_shapes_dataset(tmp_path / "data", num_train=1, num_val=3, image_size=32)
    val = load_coco_dataset(*paths["val"])
    val_images = load_images(val, (32, 32))
    keras.utils.set_random_seed(0)
    model = build_centernet((32, 32, 3), val.num_classes, width=0.25)
    pictures = detection_pictures(
        tmp_path / "pictures",
        {"teacher": keras_predictor(model), "student": keras_predictor(model)},
        val,
        val_images,
        (32, 32),
        max_images=2,
        score_threshold=0.0,
    )
    assert set(pictures) == {"detections", "heatmaps"}
    for path in pictures.values():
        assert path.parent == tmp_path / "pictures"
        with Image.open(path) as picture:
            assert picture.size == (2 * PANEL, 2 * PANEL)
    with pytest.raises(ValueError, match="image_size"):
        detection_pictures(tmp_path, {"student": keras_predictor(model)}, val, val_images, (64, 64))
