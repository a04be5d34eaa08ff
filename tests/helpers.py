"""Shared test helpers: tiny models and a serialization round-trip check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tf_keras as keras


def tiny_classifier(
    num_classes: int = 3, width: int = 4, input_shape=(6, 6, 1), name: str = "tiny", softmax=False
) -> keras.Model:
    """Conv → ReLU → global pool (`features`) → Dense (`logits`)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    activation = "softmax" if softmax else None
    outputs = keras.layers.Dense(num_classes, activation=activation, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_data(n: int = 8, num_classes: int = 3, input_shape=(6, 6, 1), seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    y = rng.integers(0, num_classes, size=n).astype(np.int64)
    return x, y


def assert_config_round_trip(obj) -> None:
    """`from_config(get_config())` rebuilds an object with the same config, via the registry too."""
    config = obj.get_config()
    rebuilt = type(obj).from_config(config)
    assert rebuilt.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(obj)
    assert again.get_config() == config


def assert_litert_agrees(
    model,
    tflite,
    x: np.ndarray,
    top1: float | None = None,
    max_abs: float | None = None,
    correlation: float | None = None,
    cosine: float | None = None,
) -> dict:
    """Runs `tflite` (a path or flatbuffer) in LiteRT and `model` in Keras on `x` and asserts
    the given agreements: top-1 agreement at least `top1`, largest absolute difference at most
    `max_abs`, correlation of all outputs above `correlation`, mean cosine of the output rows
    above `cosine`. Returns the measured figures."""
    from kd_keras.export import tflite_predict

    expected = np.asarray(model.predict(x, verbose=0))
    actual = tflite_predict(tflite, x)
    rows_expected, rows_actual = expected.reshape(len(x), -1), actual.reshape(len(x), -1)
    norms = np.linalg.norm(rows_expected, axis=1) * np.linalg.norm(rows_actual, axis=1)
    measured = {
        "top1": float(np.mean(expected.argmax(-1) == actual.argmax(-1))),
        "max_abs": float(np.abs(expected - actual).max()),
        "correlation": float(np.corrcoef(expected.ravel(), actual.ravel())[0, 1]),
        "cosine": float(np.mean(np.sum(rows_expected * rows_actual, 1) / (norms + 1e-12))),
    }
    if top1 is not None:
        assert measured["top1"] >= top1, measured
    if max_abs is not None:
        assert measured["max_abs"] <= max_abs, measured
    if correlation is not None:
        assert measured["correlation"] > correlation, measured
    if cosine is not None:
        assert measured["cosine"] > cosine, measured
    return measured


def runtime_wheel(folder: Path) -> Path:
    """The `kd-keras-runtime` wheel built from a copy of `runtime/` into `folder` (offline)."""
    import shutil
    import subprocess
    import sys

    source = folder / "source"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "runtime",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(folder), str(source)],
        cwd=folder,
        check=True,
    )
    (wheel,) = folder.glob("kd_keras_runtime-*.whl")
    return wheel


def wheel_requirements(wheel: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """The distributions `wheel` requires, with `extras`: its `Requires-Dist` lines."""
    import zipfile
    from email.parser import Parser

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(archive.read(name).decode())
    names = []
    for text in fields.get_all("Requires-Dist") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in extras):
            names.append(requirement.name)
    return names


def robot_python(root: Path, extras: tuple[str, ...] = ("images",)) -> Path:
    """A virtual environment at `root` holding what `pip install ./runtime[images]` gives a
    robot, and nothing else; its python.

    The runtime's wheel is built from `runtime/` and unpacked into the environment; the
    distributions its metadata requires (numpy, ai-edge-litert, Pillow) and theirs are linked
    from this environment, so nothing is downloaded. No TensorFlow, no kd-keras.
    """
    import subprocess
    import sys
    import zipfile
    from importlib import metadata

    from packaging.requirements import Requirement

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = root / "lib" / version / "site-packages"
    wheel = runtime_wheel(root.parent / "wheel")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    wanted, seen = wheel_requirements(wheel, extras), set()
    while wanted:
        name = wanted.pop()
        dist = metadata.distribution(name)
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
        tops = {Path(f).parts[0] for f in dist.files or [] if ".." not in Path(f).parts}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return root / "bin" / "python"


#: Run by `robot_python`: proves the environment has no TensorFlow or kd-keras, then runs the
#: bundle on `frames.npy` and saves what it found to `found.npz`.
ROBOT_SCRIPT = """
import importlib.util, sys
import numpy as np
for name in ("tensorflow", "tf_keras", "kd_keras", "keras", "cv2"):
    assert importlib.util.find_spec(name) is None, name
import kd_runtime
bundle, folder = kd_runtime.load_bundle(sys.argv[1]), sys.argv[2]
frames = list(np.load(folder + "/frames.npy"))
if bundle.task == "detection":
    found = kd_runtime.Detector(bundle, score_threshold=0.01).detect_all(frames)
    np.savez(folder + "/found.npz", *[np.concatenate(
        [f.boxes, f.scores[:, None], f.classes[:, None]], 1) for f in found])
elif bundle.task == "classification":
    np.savez(folder + "/found.npz", kd_runtime.Classifier(bundle).probabilities(frames))
else:
    np.savez(folder + "/found.npz", kd_runtime.Embedder(bundle).embed(frames))
assert "tensorflow" not in sys.modules
"""


def run_on_robot(python: Path, bundle: Path, frames: np.ndarray, folder: Path) -> list:
    """Runs `bundle` on uint8 `frames` in the robot environment; the arrays it found."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "frames.npy", frames)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder)}
    subprocess.run(
        [str(python), "-c", ROBOT_SCRIPT, str(bundle), str(folder)], check=True, cwd=folder, env=env
    )
    found = np.load(folder / "found.npz")
    return [found[f"arr_{i}"] for i in range(len(found.files))]
