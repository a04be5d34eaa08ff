import json
from pathlib import Path

import numpy as np
import pytest

from detection.data import (
    AnnotationError,
    apply_augmentation,
    apply_colour_jitter,
    build_augmentation,
    detection_dataset,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    load_coco_dataset,
    sample_colour_factors,
)
from detection.data.augmentation import IDENTITY_COLOUR


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes_dataset(root, num_train=6, num_val=3, image_size=64, seed=3)


def test_generator_is_deterministic_and_loadable(shapes, tmp_path):
    again = generate_shapes_dataset(
        tmp_path / "again", num_train=6, num_val=3, image_size=64, seed=3
    )
    for split in ("train", "val"):
        images, annotations = shapes[split]
        assert annotations.read_bytes() == again[split][1].read_bytes()
        for path in sorted(images.iterdir()):
            assert path.read_bytes() == (again[split][0] / path.name).read_bytes()
    other = generate_shapes_dataset(
        tmp_path / "other", num_train=6, num_val=3, image_size=64, seed=4
    )
    assert other["train"][1].read_bytes() != shapes["train"][1].read_bytes()
    dataset = load_coco_dataset(*shapes["train"])
    assert len(dataset) == 6 and not dataset.issues
    assert dataset.class_names == ("circle", "square", "triangle", "cross")
    assert dataset.num_boxes >= 6
    for record in dataset.records:
        assert record.width == record.height == 64
        assert np.all(record.boxes >= 0) and np.all(record.boxes <= 64)
        assert np.all(record.boxes[:, 2:] > record.boxes[:, :2])
    # Re-running with the same settings reuses the files.
    before = shapes["train"][1].stat().st_mtime_ns
    root = shapes["train"][0].parent
    ensure_shapes_dataset(root, num_train=6, num_val=3, image_size=64, seed=3)
    assert shapes["train"][1].stat().st_mtime_ns == before


def _write_bad_dataset(root, good_image):
    images = root / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (images / name).write_bytes(good_image.read_bytes())
    (images / "broken.jpg").write_bytes(b"not an image at all")
    data = {
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 64},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 64},
            {"id": 3, "file_name": "missing.jpg", "width": 64, "height": 64},
            {"id": 4, "file_name": "broken.jpg", "width": 64, "height": 64},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30]},  # outside
            {"id": 12, "image_id": 2, "category_id": 2, "bbox": [5, 5, 0, 10]},  # zero area
            {"id": 13, "image_id": 2, "category_id": 7, "bbox": [5, 5, 10, 10]},  # unknown
            {"id": 14, "image_id": 2, "category_id": 2, "bbox": [30, 30, 10, 12]},
            {"id": 15, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]},
        ],
    }
    annotations = root / "instances.json"
    annotations.write_text(json.dumps(data))
    return images, annotations


def test_bad_annotations_are_reported_with_file_and_id(shapes, tmp_path):
    good = sorted(shapes["train"][0].iterdir())[0]
    images, annotations = _write_bad_dataset(tmp_path, good)
    with pytest.raises(AnnotationError) as raised:
        load_coco_dataset(images, annotations)
    message = str(raised.value)
    assert "Found 5 bad annotation(s) or image(s)" in message
    assert f"{images / 'missing.jpg'} [image_id=3]: image file is missing" in message
    assert f"{images / 'broken.jpg'} [image_id=4]: image file cannot be read" in message
    assert f"{annotations} [image_id=1, annotation_id=11]: box [50, 50, 30, 30] lies outside" in (
        message
    )
    assert "[image_id=2, annotation_id=12]: box has zero or negative area" in message
    assert "[image_id=2, annotation_id=13]: unknown category_id 7" in message
    assert "on_error='skip'" in message

    dataset = load_coco_dataset(images, annotations, on_error="skip")
    assert len(dataset.issues) == 5
    assert [r.image_id for r in dataset.records] == [1, 2]
    assert [len(r.boxes) for r in dataset.records] == [1, 1]
    assert sorted(dataset.coco.getAnnIds()) == [10, 14]  # evaluation ground truth is clean too
    np.testing.assert_allclose(dataset.records[1].boxes, [[30, 30, 40, 42]])
    assert list(dataset.records[1].classes) == [1]


def test_missing_inputs_fail_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="Images folder not found"):
        load_coco_dataset(tmp_path / "nope", tmp_path / "x.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a COCO instances file"):
        load_coco_dataset(tmp_path, tmp_path / "x.json")


def test_augmentation_moves_boxes_with_pixels():
    image = np.zeros((32, 32, 3), np.uint8)
    image[4:12, 2:10] = 255
    flip = build_augmentation((32, 32), flip=1.0, crop=0.0, seed=0)
    out, boxes, classes = apply_augmentation(flip, image, np.array([[2, 4, 10, 12]]), np.array([3]))
    np.testing.assert_allclose(boxes, [[22, 4, 30, 12]], atol=1e-4)
    assert list(classes) == [3]
    assert out[4:12, 22:30].min() == 255 and out[:, :20].max() == 0
    crop = build_augmentation((32, 32), flip=0.0, crop=1.0, seed=1)
    for _ in range(5):
        out, boxes, _ = apply_augmentation(crop, image, np.array([[2, 4, 10, 12]]), np.array([0]))
        assert out.shape == (32, 32, 3)
        assert np.all(boxes >= 0) and np.all(boxes <= 32)


def test_colour_jitter_factors_act_as_named():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, (4, 8, 8, 3)).astype(np.float32)
    images[3] = 0.5  # a grey image
    factors = np.array(
        [IDENTITY_COLOUR, (1.2, 1.0, 1.0, 0.0), (1.0, 1.0, 0.0, 0.0), (1.0, 1.0, 1.0, 0.25)],
        np.float32,
    )
    out = apply_colour_jitter(images, factors).numpy()
    np.testing.assert_allclose(out[0], images[0], atol=1e-5)
    np.testing.assert_allclose(out[1], np.clip(images[1] * 1.2, 0, 1), atol=1e-5)
    # Saturation 0 leaves the luma in every channel.
    luma = images[2] @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(out[2], np.repeat(luma[..., None], 3, -1), atol=1e-4)
    # A hue turn keeps grey pixels grey.
    np.testing.assert_allclose(out[3], images[3], atol=1e-4)
    contrast = apply_colour_jitter(images[:1], np.array([(1.0, 0.0, 1.0, 0.0)])).numpy()
    assert np.ptp(contrast) < 1e-5  # contrast 0: every pixel becomes the mean luma
    sampled = sample_colour_factors(rng, 1000, probability=0.8)
    untouched = np.all(sampled == IDENTITY_COLOUR, axis=1).mean()
    assert 0.15 < untouched < 0.25
    assert sampled[:, :3].min() >= 0.7 and sampled[:, :3].max() <= 1.3
    assert np.abs(sampled[:, 3]).max() <= 0.05


def test_pipeline_batches_targets(shapes):
    dataset = load_coco_dataset(*shapes["train"])
    data = detection_dataset(dataset, (64, 64), batch_size=3, training=False, augment=False)
    batches = list(data)
    assert len(batches) == 2
    images, targets = batches[0]
    assert images.shape == (3, 64, 64, 3) and images.dtype.name == "float32"
    assert float(np.min(images)) >= 0.0 and float(np.max(images)) <= 1.0
    assert targets[0].shape == (3, 16, 16, 4)
    centres = sum(int(np.sum(t[1][..., 2])) for _, t in batches)
    peaks = sum(int(np.sum(t[0] == 1.0)) for _, t in batches)
    # One centre per box (boxes sharing a cell would merge; the generator avoids big overlaps).
    assert centres == peaks <= dataset.num_boxes and centres >= dataset.num_boxes - 1
    augmented = detection_dataset(dataset, (64, 64), batch_size=2, training=True, seed=1)
    images, targets = next(iter(augmented))
    assert images.shape == (2, 64, 64, 3) and targets[2].shape == (2, 16, 16, 3)


def _two_epochs(dataset, seed):
    data = detection_dataset(dataset, (64, 64), batch_size=2, training=True, seed=seed)
    return [np.concatenate([images.numpy().ravel(), targets[0].numpy().ravel()])
            for _ in range(2) for images, targets in data]  # fmt: skip


def test_training_batches_repeat_for_the_same_seed(shapes):
    dataset = load_coco_dataset(*shapes["train"])
    first, again = _two_epochs(dataset, seed=5), _two_epochs(dataset, seed=5)
    assert len(first) == 6
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # Epochs differ (reshuffled, re-augmented), and so does another seed.
    assert not np.array_equal(first[0], first[3])
    other = _two_epochs(dataset, seed=6)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def _boxes_dataset(sides):
    """200×200 images, one square box of each side (pixels)."""
    from detection.data.coco_dataset import CocoDataset, ImageRecord

    records = [
        ImageRecord(i, Path(f"{i}.jpg"), 200, 200, np.array([[10, 10, 10 + s, 10 + s]], np.float32),
                    np.array([0]))
        for i, s in enumerate(sides)
    ]  # fmt: skip
    return CocoDataset(records, (1,), ("thing",), None, [], Path("instances.json"))


def test_small_boxes_get_a_warning_naming_an_image_size_that_resolves_them():
    from detection.data import median_box_cells, small_object_warning

    dense = _boxes_dataset([30, 40, 50])  # median 40 px of 200: 12.8 px at 64, 3.2 cells
    assert median_box_cells(dense, 64, 4) == pytest.approx(3.2)
    assert small_object_warning(dense, 64, 4) is None
    warning = small_object_warning(dense, 32, 4)  # 1.6 cells
    assert "1.6 output cells across at image_size=32" in warning
    assert "about 64 gives 3 cells" in warning
    assert median_box_cells(_boxes_dataset([]), 64, 4) is None


def test_the_small_dense_mode_packs_many_40_px_objects_into_200_px_images(tmp_path):
    import json as json_lib

    from detection.data.synthetic_shapes import generate_shapes_dataset

    paths = generate_shapes_dataset(tmp_path, num_train=6, num_val=2, image_size=200,
                                    mode="small_dense")  # fmt: skip
    coco = json_lib.loads(paths["train"][1].read_text())
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]])[1:]
    assert len(per_image) == 6 and per_image.min() >= 4 and per_image.max() <= 14
    sides = [np.sqrt(a["bbox"][2] * a["bbox"][3]) for a in coco["annotations"]]
    assert 30 <= np.median(sides) <= 50
    assert json_lib.loads((tmp_path / "dataset.json").read_text())["mode"] == "small_dense"
    with pytest.raises(ValueError, match="Expected mode in"):
        generate_shapes_dataset(tmp_path / "x", num_train=1, num_val=1, mode="sparse")
