"""Real-world COCO folders that used to give silently wrong boxes: each is refused or handled."""

import json

import numpy as np
import pytest
from PIL import Image

from detection.data import AnnotationError, DatasetError, load_coco_dataset, read_image
from detection.evaluation import coco_evaluate

CATEGORIES = [{"id": 1, "name": "box"}]


def _write_json(path, images, annotations, categories=CATEGORIES):
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def _rotated_photo(path, displayed):
    """Saves `displayed` as a JPEG whose pixels are stored turned, with EXIF orientation 6."""
    stored = np.rot90(displayed, k=1)  # orientation 6 = rotate 90 degrees clockwise to display
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, quality=95, exif=exif.tobytes())


def _displayed_scene():
    # 48 wide, 32 high as displayed; a white box at x 30..44, y 4..14.
    displayed = np.zeros((32, 48, 3), np.uint8)
    displayed[4:14, 30:44] = 255
    return displayed


def test_exif_rotated_photo_with_raw_size_in_json_is_refused(tmp_path):
    _rotated_photo(tmp_path / "a.jpg", _displayed_scene())
    stored_w, stored_h = Image.open(tmp_path / "a.jpg").size
    assert (stored_w, stored_h) == (32, 48)  # the file's own pixels are turned
    images = [{"id": 1, "file_name": "a.jpg", "width": stored_w, "height": stored_h}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}]
    with pytest.raises(AnnotationError) as error:
        load_coco_dataset(tmp_path, _write_json(tmp_path / "a.json", images, annotations))
    message = str(error.value)
    assert "JSON says 32x48 but a.jpg is 48x32 as displayed" in message
    assert "image_id=1" in message


def test_exif_rotated_photo_boxes_land_on_the_displayed_pixels(tmp_path):
    _rotated_photo(tmp_path / "a.jpg", _displayed_scene())
    images = [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 32}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 4, 14, 10]}]
    dataset = load_coco_dataset(tmp_path, _write_json(tmp_path / "a.json", images, annotations))
    record = dataset.records[0]
    pixels = read_image(record, (32, 48)).mean(axis=-1)
    x0, y0, x1, y1 = record.boxes[0].astype(int)
    inside = pixels[y0:y1, x0:x1] > 128
    assert inside.mean() > 0.95  # the box covers the white rectangle
    assert (pixels > 128).sum() == pytest.approx(inside.sum(), rel=0.1)


def test_duplicate_image_ids_are_refused_with_both_files(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / name)
    images = [
        {"id": 7, "file_name": "a.jpg", "width": 16, "height": 16},
        {"id": 7, "file_name": "b.jpg", "width": 16, "height": 16},
    ]
    annotations = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 2, 5, 5]}]
    path = _write_json(tmp_path / "a.json", images, annotations)
    with pytest.raises(AnnotationError) as error:
        load_coco_dataset(tmp_path, path)
    assert "image id 7 is used by 2 images (a.jpg, b.jpg)" in str(error.value)
    # Skipping drops both images and their boxes rather than guessing.
    images.append({"id": 8, "file_name": "a.jpg", "width": 16, "height": 16})
    annotations.append({"id": 2, "image_id": 8, "category_id": 1, "bbox": [1, 1, 4, 4]})
    path = _write_json(tmp_path / "b.json", images, annotations)
    kept = load_coco_dataset(tmp_path, path, on_error="skip")
    assert [r.image_id for r in kept.records] == [8] and kept.num_boxes == 1
    assert len(kept.issues) == 2


def test_truncated_jpeg_is_refused(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    images = [{"id": 1, "file_name": "cut.jpg", "width": 64, "height": 64}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}]
    with pytest.raises(AnnotationError) as error:
        load_coco_dataset(tmp_path, _write_json(tmp_path / "a.json", images, annotations))
    assert "cut.jpg [image_id=1]: image file cannot be read" in str(error.value)
    assert "truncated" in str(error.value)


def test_dataset_without_boxes_is_refused(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.jpg")
    images = [{"id": 1, "file_name": "a.jpg", "width": 16, "height": 16}]
    with pytest.raises(DatasetError, match="no boxes to train on or score against"):
        load_coco_dataset(tmp_path, _write_json(tmp_path / "a.json", images, []))


def _two_category_set(tmp_path, name, categories, category_of_box):
    folder = tmp_path / name
    folder.mkdir()
    image = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(image).save(folder / "a.jpg")
    images = [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32}]
    annotations = [
        {"id": i + 1, "image_id": 1, "category_id": c, "bbox": [2 + 10 * i, 2, 8, 8]}
        for i, c in enumerate(category_of_box)
    ]
    return load_coco_dataset(
        folder, _write_json(folder / "a.json", images, annotations, categories)
    )


def test_validation_categories_are_matched_by_id(tmp_path):
    cats = [{"id": 3, "name": "cup"}, {"id": 5, "name": "bolt"}, {"id": 9, "name": "nut"}]
    train = _two_category_set(tmp_path, "train", cats, [3, 5, 9])
    # The validation file lists only two categories, in another order.
    val = _two_category_set(tmp_path, "val", [cats[2], cats[1]], [5, 9])
    assert val.class_names == ("bolt", "nut")  # its own indices: bolt 0, nut 1
    aligned = val.aligned_to(train)
    assert aligned.category_ids == (3, 5, 9)
    assert aligned.records[0].classes.tolist() == [1, 2]
    # A perfect detector in the training index space scores AP 1 on the aligned set.
    record = aligned.records[0]
    detections = [
        {
            "image_id": 1,
            "category_id": aligned.category_ids[int(c)],
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": 0.9,
        }
        for b, c in zip(record.boxes, record.classes)
    ]
    assert coco_evaluate(aligned.coco, detections)["AP"] == pytest.approx(1.0)


def test_validation_with_an_unknown_or_renamed_category_is_refused(tmp_path):
    cats = [{"id": 1, "name": "cup"}, {"id": 2, "name": "bolt"}]
    train = _two_category_set(tmp_path, "train", cats, [1, 2])
    renamed = _two_category_set(tmp_path, "val", [{"id": 2, "name": "nut"}], [2])
    with pytest.raises(DatasetError, match=r"renamed \[\"2: 'nut' vs 'bolt'\"\]"):
        renamed.aligned_to(train)
    unknown = _two_category_set(tmp_path, "val2", [{"id": 4, "name": "gear"}], [4])
    with pytest.raises(DatasetError, match=r"unknown ids \[4\]"):
        unknown.aligned_to(train)


def test_recipe_refuses_a_validation_set_without_boxes_before_training(tmp_path, capsys):
    from recipes import detect

    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / split / "a.jpg")
    images = [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32}]
    boxes = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}]
    _write_json(tmp_path / "train.json", images, boxes)
    _write_json(tmp_path / "val.json", images, [])
    args = ["--data", str(tmp_path / "train"), "--annotations", str(tmp_path / "train.json")]
    args += [
        "--set",
        f"val_data={tmp_path / 'val'}",
        "--set",
        f"val_annotations={tmp_path / 'val.json'}",
    ]
    args += ["--set", "image_size=32", "--set", "batch_size=1", "--no-tracking"]
    assert detect.main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    assert "val.json has 1 usable images but no boxes" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()
