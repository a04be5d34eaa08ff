"""Every image format a user may bring reads the same way in every task, with any allowed Pillow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from classification.data import load_image_folder
from detection.data import AnnotationError, detection_dataset, load_coco_dataset
from kd_keras.images import ImageReadError, inspect_image, read_image

ROOT = Path(__file__).resolve().parents[2]
H, W = 12, 16
# A left-to-right ramp, a top-to-bottom ramp and a constant: every channel distinguishable.
_U = np.linspace(0.0, 1.0, W)[None, :].repeat(H, 0)
_V = np.linspace(0.0, 1.0, H)[:, None].repeat(W, 1)
RGB = np.stack([_U, _V, np.full((H, W), 0.25)], -1)
GRAY = 0.2 + 0.6 * _U


def _u8(values: np.ndarray) -> np.ndarray:
    return np.round(values * 255).astype(np.uint8)


def _exif_rotated_jpeg(path: Path) -> None:
    stored = np.ascontiguousarray(np.rot90(_u8(RGB), k=1))  # orientation 6 turns it back
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, quality=100, subsampling=0, exif=exif.tobytes())


def _cmyk_jpeg(path: Path) -> None:
    Image.fromarray(_u8(RGB)).convert("CMYK").save(path, quality=100, subsampling=0)


# name -> (writer(path), expected RGB as floats in [0, 1], tolerance in 8-bit levels)
FORMATS = {
    "png_rgb8.png": (lambda p: Image.fromarray(_u8(RGB)).save(p), RGB, 0),
    "png_gray8.png": (lambda p: Image.fromarray(_u8(GRAY)).save(p), GRAY, 0),
    "png_gray16.png": (
        lambda p: cv2.imwrite(str(p), np.round(GRAY * 65535).astype(np.uint16)),
        GRAY,
        1,
    ),
    "png_rgb16.png": (
        lambda p: cv2.imwrite(str(p), np.round(RGB[..., ::-1] * 65535).astype(np.uint16)),
        RGB,
        1,
    ),
    "png_rgba.png": (
        lambda p: Image.fromarray(np.dstack([_u8(RGB), np.full((H, W), 128, np.uint8)])).save(p),
        RGB,
        0,
    ),
    "jpeg_rgb.jpg": (
        lambda p: Image.fromarray(_u8(RGB)).save(p, quality=100, subsampling=0),
        RGB,
        4,
    ),
    "jpeg_cmyk.jpg": (_cmyk_jpeg, RGB, 4),
    "jpeg_exif_rotated.jpg": (_exif_rotated_jpeg, RGB, 4),
    "bmp_rgb.bmp": (lambda p: Image.fromarray(_u8(RGB)).save(p), RGB, 0),
    "tiff_rgb.tif": (lambda p: Image.fromarray(_u8(RGB)).save(p), RGB, 0),
    "tiff_float32.tif": (lambda p: Image.fromarray(GRAY.astype(np.float32)).save(p), GRAY, 1),
    "webp_lossless.webp": (lambda p: Image.fromarray(_u8(RGB)).save(p, lossless=True), RGB, 0),
}


def _write_all(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (write, _, _) in FORMATS.items():
        write(folder / name)
        paths[name] = folder / name
    return paths


def _as_rgb(expected: np.ndarray) -> np.ndarray:
    return expected if expected.ndim == 3 else np.repeat(expected[..., None], 3, -1)


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    return _write_all(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_reads_as_displayed_in_eight_bits(formats, name):
    _, expected, tolerance = FORMATS[name]
    pixels = read_image(formats[name])
    assert pixels.dtype == np.uint8 and pixels.shape == (H, W, 3)
    error = np.abs(pixels.astype(int) - _u8(_as_rgb(expected)).astype(int)).max()
    assert error <= tolerance, f"{name}: off by {error} levels"
    assert inspect_image(formats[name]) == (None, (W, H))


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    # Two flat halves at 16-bit values 0.137 and 0.458 of full scale (read as pure white before).
    values = np.zeros((8, 8), np.uint16)
    values[:, :4], values[:, 4:] = round(0.137 * 65535), round(0.458 * 65535)
    cv2.imwrite(str(tmp_path / "a.png"), values)
    gray = read_image(tmp_path / "a.png", channels=1)[..., 0] / 255.0
    assert gray.shape == (8, 8)
    assert abs(gray[:, :4].mean() - 0.137) < 0.003 and abs(gray[:, 4:].mean() - 0.458) < 0.003


def test_undecodable_files_are_refused_naming_them(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(_u8(RGB)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name in ("text.png", "cut.png"):
        problem, size = inspect_image(tmp_path / name)
        assert size is None and "cannot be read" in problem
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)
    assert inspect_image(tmp_path / "absent.png") == ("image file is missing", None)


def _coco_folder(folder: Path, names: list[str]) -> Path:
    images = [
        {"id": i + 1, "file_name": name, "width": W, "height": H} for i, name in enumerate(names)
    ]
    annotations = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 6, 5]}
        for i in range(len(names))
    ]
    categories = [{"id": 1, "name": "thing"}]
    path = folder / "instances.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


@pytest.mark.parametrize("cache_images", [True, False])
def test_detection_trains_on_every_format(formats, cache_images):
    """Read once into the cache or per batch (a set larger than the cache): the same pixels."""
    names = sorted(FORMATS)
    folder = formats["png_rgb8.png"].parent
    dataset = load_coco_dataset(folder, _coco_folder(folder, names))
    assert len(dataset) == len(names) and not dataset.issues
    batches = detection_dataset(
        dataset, (H, W), len(names), training=False, stride=4, cache_images=cache_images
    )
    images, _ = next(iter(batches))
    for name, image in zip(names, images.numpy()):
        expected = _as_rgb(FORMATS[name][1])
        assert np.abs(image - expected).max() <= (FORMATS[name][2] + 1) / 255, name


def test_detection_refuses_an_undecodable_png_before_training(tmp_path):
    Image.fromarray(_u8(RGB)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(AnnotationError, match=r"bad\.png.*cannot be read"):
        load_coco_dataset(tmp_path, _coco_folder(tmp_path, ["good.png", "bad.png"]))


def test_classification_reads_like_detection(tmp_path):
    for name in FORMATS:
        (tmp_path / "a").mkdir(exist_ok=True)
        FORMATS[name][0](tmp_path / "a" / name)
    (tmp_path / "b").mkdir()
    Image.fromarray(_u8(RGB)).save(tmp_path / "b" / "x.png")
    Image.fromarray(_u8(RGB)).save(tmp_path / "b" / "y.png")
    dataset = load_image_folder(tmp_path, image_size=W, channels=3)
    assert dataset.x.shape == (len(FORMATS) + 2, W, W, 3)
    files = sorted((tmp_path / "a").iterdir())
    for path, x in zip(files, dataset.x):
        # The red ramp runs left to right in every file, the EXIF-rotated photo included, and
        # 16-bit and float files keep their values (the blue channel is 0.25, the gray ramp
        # starts at 0.2).
        assert x[:, -1, 0].mean() > x[:, 0, 0].mean() + 0.5, path.name
        assert x.max() <= 1.0 and x[:, 0].mean() < 0.45, path.name


@pytest.mark.slow
def test_oldest_allowed_pillow_reads_the_same_pixels(formats, tmp_path):
    """pillow>=10 is allowed: the same reader under Pillow 10.0 gives the same arrays."""
    target = tmp_path / "pillow10"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         "pillow==10.0.0"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if install.returncode != 0:
        pytest.skip(f"Pillow 10.0.0 could not be installed from PyPI: {install.stderr[-300:]}")
    script = (
        "import importlib.util, json, sys, PIL, numpy as np\n"
        "spec = importlib.util.spec_from_file_location('images', sys.argv[1])\n"
        "images = importlib.util.module_from_spec(spec); spec.loader.exec_module(images)\n"
        "out = {'version': PIL.__version__}\n"
        "for path in sys.argv[2:]:\n"
        "    out[path] = images.read_image(path).astype(int).tolist()\n"
        "print(json.dumps(out))\n"
    )
    paths = [str(formats[name]) for name in sorted(FORMATS)]
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "kd_keras" / "images.py"), *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    old = json.loads(result.stdout)
    assert old["version"] == "10.0.0"
    for name, path in zip(sorted(FORMATS), paths):
        difference = np.abs(np.array(old[path]) - read_image(path).astype(int)).max()
        assert difference <= 2, f"{name}: Pillow 10.0 and this Pillow differ by {difference}"
