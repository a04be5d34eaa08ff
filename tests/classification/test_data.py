import numpy as np
import pytest
from PIL import Image

from classification import data


def _folder(root, classes=("cat", "dog"), per_class=2, size=12):
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size, 3), 40 * index + i, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_image_folder_loads_classes_in_sorted_order(tmp_path):
    dataset = data.load_image_folder(_folder(tmp_path, ("b", "a")), image_size=8)
    assert dataset.class_names == ("a", "b")
    assert dataset.x.shape == (4, 8, 8, 3) and dataset.x.dtype == np.float32
    np.testing.assert_array_equal(dataset.y, [0, 0, 1, 1])
    assert dataset.x.min() >= 0.0 and dataset.x.max() <= 1.0
    assert data.load_image_folder(tmp_path, 8, channels=1).x.shape == (4, 8, 8, 1)


def test_corrupt_image_is_named(tmp_path):
    _folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Cannot read image .*broken\.png"):
        data.load_image_folder(tmp_path, 8)


def test_empty_dataset_and_empty_class(tmp_path):
    with pytest.raises(ValueError, match="no class subfolders"):
        data.load_image_folder(tmp_path, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        data.load_image_folder(tmp_path, 8)
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        data.load_image_folder(tmp_path / "missing", 8)


def test_digits_are_bundled_and_split_stratified():
    digits = data.load_digits()
    assert digits.x.shape == (1797, 8, 8, 1) and digits.num_classes == 10
    train, test = digits.split(0.25, seed=0)
    assert len(test.x) == 450
    assert set(np.unique(test.y)) == set(range(10))
    again, _ = digits.split(0.25, seed=0)
    np.testing.assert_array_equal(train.y, again.y)
