"""kd_runtime on small exported models: bundles, frames, decoding, errors and the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

from detection.centernet import build_centernet, decode_detections
from detection.litert import HEAD_ROLES, LiteRTDetector
from kd_keras.export import tflite_predict, to_tflite
from kd_keras.pipeline import DeploySpec
from kd_keras.pipeline.deploy import output_roles, write_deploy_bundle
from kd_runtime import BundleError, Classifier, Detector, Embedder, Gallery, load_bundle
from kd_runtime.images import model_input, resize, takes_pixels, to_gray

SIZE = 32
DETECTION = DeploySpec(
    "detection",
    ("circle", "square"),
    HEAD_ROLES,
    {"stride": 4, "top_k": 20, "score_threshold": 0.05},
)


def frames(count: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory):
    """A tiny CenterNet exported to full int8 and bundled as a run bundles it."""
    keras.utils.set_random_seed(0)
    model = build_centernet((SIZE, SIZE, 3), 2, width=0.25)
    folder = tmp_path_factory.mktemp("detector")
    tflite = folder / "student_int8.tflite"
    to_tflite(model, "int8", representative_data=frames(16) / 255.0, path=tflite)
    bundle = write_deploy_bundle(
        DETECTION, tflite, folder, mode="int8", config_text="seed: 0\n", metrics={"AP": 0.5}
    )
    return bundle, tflite


def test_bundle_records_what_the_robot_needs(detector_bundle):
    folder, tflite = detector_bundle
    bundle = load_bundle(folder)
    spec = bundle.spec
    assert spec["schema_version"] == 1 and bundle.task == "detection"
    assert bundle.classes == ("circle", "square")
    assert bundle.model_path.read_bytes() == tflite.read_bytes()
    assert spec["input"]["height"] == spec["input"]["width"] == SIZE
    assert spec["input"]["dtype"] == "float32" and spec["input"]["layout"] == "NHWC"
    assert spec["input"]["normalization"] == {"mean": 0.0, "std": 255.0}
    assert sorted(o["role"] for o in spec["outputs"]) == ["heatmap_logits", "offset", "size"]
    heatmap = next(o for o in spec["outputs"] if o["role"] == "heatmap_logits")
    assert heatmap["shape"] == [1, SIZE // 4, SIZE // 4, 2] and heatmap["dtype"] == "float32"
    assert spec["model"]["mode"] == "int8" and spec["source"]["metrics"] == {"AP": 0.5}
    assert len(spec["source"]["config_sha256"]) == 64


def test_detector_gives_the_evaluation_boxes(detector_bundle):
    folder, tflite = detector_bundle
    images = frames(4, seed=1)
    expected = decode_detections(*LiteRTDetector(tflite)(images / 255.0), 4, 20, 0.05)
    found = Detector(folder).detect_all(list(images))
    assert sum(len(f) for f in found) > 0
    for want, got in zip(expected, found):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.names == tuple(("circle", "square")[c] for c in want.classes)


def test_boxes_come_back_in_the_frames_pixels(detector_bundle):
    folder, _ = detector_bundle
    detector = Detector(folder)
    image = frames(1, seed=2)[0]
    # A frame twice as large, each pixel a 2x2 block: area resizing gives back the image.
    frame = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    small, large = detector.detect(image), detector.detect(frame)
    assert len(small) > 0
    np.testing.assert_allclose(large.boxes, small.boxes * 2, atol=1e-4)
    np.testing.assert_array_equal(large.scores, small.scores)
    # A wide frame scales x and y apart.
    wide = np.repeat(image, 3, axis=1)
    np.testing.assert_allclose(
        detector.detect(wide).boxes, small.boxes * [3, 1, 3, 1], rtol=1e-5, atol=1e-3
    )


def test_area_resize_and_luma():
    block = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10
    np.testing.assert_array_equal(resize(block, 2, 2)[..., 0], [[25, 45], [105, 125]])
    assert resize(block, 4, 4) is block
    import cv2

    frame = frames(1, 50, seed=3)[0]
    ours = resize(frame, 32, 32).astype(int)
    theirs = cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(ours - theirs).max() <= 1
    pixel = np.array([[[255, 0, 0]]], np.uint8)
    assert to_gray(pixel)[0, 0, 0] == 76  # 0.299 * 255


@pytest.mark.parametrize(("height", "width"), [(224, 224), (96, 128), (600, 800)])
def test_camera_frames_resize_as_opencv_does(height, width):
    import cv2

    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frame[100:300, 200:500] = (10, 200, 90)  # edges as well as noise
    shrink = height < 480
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    theirs = cv2.resize(frame, (width, height), interpolation=interpolation).astype(int)
    difference = np.abs(resize(frame, height, width).astype(int) - theirs)
    # OpenCV's bilinear weights are 11-bit fixed point: more of its pixels round the other way.
    assert difference.max() <= 1 and difference.mean() < (0.05 if shrink else 0.2)


def test_uint8_input_takes_pixels_as_they_are():
    spec = {"dtype": "uint8", "quantization": {"scale": 1 / 255, "zero_point": 0}}
    spec["normalization"] = {"mean": 0.0, "std": 255.0}
    pixels = frames(1)
    assert takes_pixels(spec) and model_input(pixels, spec).dtype == np.uint8
    spec["quantization"] = {"scale": 0.01, "zero_point": 3}
    assert not takes_pixels(spec)
    np.testing.assert_array_equal(model_input(pixels, spec), pixels.astype(np.float32) / 255)


def _rewrite(folder, tmp_path, edit):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    spec = json.loads((copy / "bundle.json").read_text())
    edit(spec, copy)
    (copy / "bundle.json").write_text(json.dumps(spec))
    return copy


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda spec, folder: (folder / "model.tflite").unlink(), "model.tflite not found"),
        (lambda spec, folder: spec.update(schema_version=7), "schema_version 7"),
        (lambda spec, folder: spec.update(schema="other"), "not a kd-keras deploy bundle"),
        (lambda spec, folder: spec.update(task="pose"), "unknown task 'pose'"),
        (lambda spec, folder: spec["input"].update(height=64), "input shape [32, 32, 3] != [64"),
        (lambda spec, folder: spec["outputs"][0].update(dtype="int8"), "dtype float32 != int8"),
        (
            lambda spec, folder: (folder / "model.tflite").write_bytes(b"x" * 10),
            "does not match bundle.json (SHA-256",
        ),
    ],
)
def test_bad_bundles_are_refused(detector_bundle, tmp_path, edit, message):
    folder = _rewrite(detector_bundle[0], tmp_path, edit)
    with pytest.raises(BundleError) as caught:
        Detector(folder)
    assert message in str(caught.value), caught.value
    assert "\n" not in str(caught.value)


def test_a_bundle_of_another_task_is_refused(detector_bundle):
    with pytest.raises(BundleError, match="holds a detection model; Embedder runs reid"):
        Embedder(detector_bundle[0])
    with pytest.raises(BundleError, match="bundle.json not found"):
        load_bundle(detector_bundle[0] / "nothing")


def test_command_line_writes_a_json_line_per_frame(detector_bundle, tmp_path):
    from PIL import Image

    images = tmp_path / "frames"
    images.mkdir()
    for index, image in enumerate(frames(3, 48, seed=4)):
        Image.fromarray(image).save(images / f"{index}.png")
    command = [sys.executable, "-m", "kd_runtime", str(detector_bundle[0]), str(images)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["frame"] for line in lines] == ["0.png", "1.png", "2.png"]
    detector = Detector(detector_bundle[0])
    first = detector.detect(np.asarray(Image.open(images / "0.png")))
    assert len(lines[0]["detections"]) == len(first) > 0
    assert lines[0]["detections"][0]["class"] == first.names[0]
    assert "3 frames," in done.stderr and "frames per second" in done.stderr

    bad = subprocess.run(
        [sys.executable, "-m", "kd_runtime", str(tmp_path), str(images)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


def test_embedder_and_gallery_match_people(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 8, 3))
    x = keras.layers.Flatten()(inputs)
    embedding = keras.layers.Dense(6, name="embedding")(x)
    model = keras.Model(inputs, embedding)
    tflite = tmp_path / "reid.tflite"
    to_tflite(model, "float32", path=tflite)
    spec = DeploySpec(
        "reid", (), {"embedding": "embedding"}, {"embedding_dim": 6, "metric": "cosine"}
    )
    folder = write_deploy_bundle(spec, tflite, tmp_path, mode="float32", config_text="", metrics={})
    embedder = Embedder(folder)
    crops = frames(3, 16, seed=5)[:, :, :8]
    vectors = embedder.embed(list(crops))
    expected = tflite_predict(tflite, crops / np.float32(255.0))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    gallery = embedder.gallery()
    gallery.add(vectors, ["ann", "bob", "cat"])
    assert [m[0][0] for m in gallery.match(vectors)] == ["ann", "bob", "cat"]
    assert gallery.match(vectors[:1], k=3)[0][0][1] == pytest.approx(0.0, abs=1e-6)
    euclidean = Gallery("euclidean")
    euclidean.add(np.eye(3), ["x", "y", "z"])
    ((name, distance),) = euclidean.match(np.array([[0.0, 2.0, 0.0]]))[0]
    assert name == "y" and distance == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one identity per embedding"):
        gallery.add(vectors, ["only one"])


def test_classifier_on_gray_digits(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(inputs))
    tflite = tmp_path / "digits.tflite"
    to_tflite(keras.Model(inputs, logits), "float32", path=tflite)
    spec = DeploySpec(
        "classification", ("a", "b", "c"), {"logits": "logits"}, {"activation": "softmax"},
        normalization={"mean": 0.0, "std": 16.0}, color="L",
    )  # fmt: skip
    folder = write_deploy_bundle(spec, tflite, tmp_path, mode="float32", config_text="", metrics={})
    classifier = Classifier(folder)
    gray = np.random.default_rng(6).integers(0, 17, (4, 8, 8), dtype=np.uint8)
    probabilities = classifier.probabilities(list(gray))
    logits_expected = tflite_predict(tflite, gray[..., None] / np.float32(16.0))
    np.testing.assert_array_equal(probabilities.argmax(1), logits_expected.argmax(1))
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-6)
    name, probability = classifier.classify(gray[0])
    assert name == "abc"[int(logits_expected[0].argmax())]
    assert probability == pytest.approx(float(probabilities[0].max()))


def test_output_roles_follow_prefixed_names():
    names = ["quant_heatmap", "quant_size", "quant_offset"]
    assert output_roles(names, HEAD_ROLES) == dict(zip(names, HEAD_ROLES.values()))
    with pytest.raises(ValueError, match="Cannot find the 'heatmap' output"):
        output_roles(["logits"], HEAD_ROLES)


def test_runtime_wheel_requires_numpy_and_litert_alone(tmp_path):
    import zipfile

    from tests.helpers import runtime_wheel, wheel_requirements

    wheel = runtime_wheel(tmp_path)
    assert sorted(wheel_requirements(wheel)) == ["ai-edge-litert", "numpy"]
    assert wheel_requirements(wheel, ("images",))[-1] == "pillow"
    assert wheel_requirements(wheel, ("video",))[-1] == "opencv-python-headless"
    with zipfile.ZipFile(wheel) as archive:
        sources = [n for n in archive.namelist() if n.endswith(".py")]
        assert {n.split("/")[0] for n in sources} == {"kd_runtime"}
        for name in sources:
            text = archive.read(name).decode()
            assert "import tensorflow" not in text and "kd_keras" not in text, name


def test_robot_environment_gives_the_in_process_boxes(detector_bundle, robot_python, tmp_path):
    from tests.helpers import run_on_robot

    bundle, tflite = detector_bundle
    images = frames(3, seed=5)
    found = run_on_robot(robot_python, bundle, images, tmp_path)
    expected = Detector(bundle, score_threshold=0.01).detect_all(list(images))
    assert len(found) == 3 and sum(len(f) for f in expected) > 0
    for got, want in zip(found, expected, strict=True):
        np.testing.assert_allclose(got[:, :4], want.boxes, atol=1e-4)
        np.testing.assert_allclose(got[:, 4], want.scores, atol=1e-6)
