"""Latency as a robot sees it: a deploy bundle end to end per frame, float32 against int8.

    python benchmarks/robot_latency.py                    # MobileNetV2-0.35 at 224×224
    python benchmarks/robot_latency.py --alpha 1.0 --threads 1 2

Builds a tf_keras.applications MobileNetV2 classifier (random weights: nothing is downloaded;
latency does not depend on the weights' values), exports it as float32, as full int8 with float
input and as full int8 taking uint8 camera pixels (`pixel_input`), bundles each as a run does and
times `kd_runtime.Classifier` on 640×480 JPEG frames: decode (Pillow), resize and normalise
(numpy), invoke (LiteRT, XNNPACK) and softmax, at each thread count. The contenders take turns
frame by frame in every round, so a busy moment of the machine hits all of them; each figure is
the median over rounds of each round's median frame. Goal: int8 end to end at least 2× as fast as
float32 for MobileNetV2-0.35 at 224×224 on this CPU.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tf_keras as keras
from PIL import Image

from kd_keras.export import to_tflite
from kd_runtime import Classifier, TFLiteModel
from kd_runtime.bundle import write_bundle

# MobileNetV2's own preprocessing is x = pixel / 127.5 − 1; a zero point must be a whole
# number, so the bundles use mean 128 (the difference is 0.4% of one pixel step).
NORMALIZATION = {"mean": 128.0, "std": 127.5}
GOAL = 2.0
STAGES = ("decode", "prepare", "invoke", "outputs")


def camera_frames(count: int, height: int = 480, width: int = 640, seed: int = 0) -> list[bytes]:
    """JPEG frames of smooth random scenes (gradients plus blobs), as a camera writes them."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    yy, xx = rows / max(height, width), cols / max(height, width)
    frames = []
    for _ in range(count):
        image = np.zeros((height, width, 3))
        for channel in range(3):
            a, b, c = rng.normal(size=3)
            image[..., channel] = 128 + 60 * np.sin(3 * a * xx + 3 * b * yy + c)
        for _ in range(6):
            cy, cx, r = rng.random() * height, rng.random() * width, 20 + rng.random() * 80
            mask = (rows - cy) ** 2 + (cols - cx) ** 2 < r**2
            image[mask] = rng.integers(0, 256, 3)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        frames.append(buffer.getvalue())
    return frames


def decode(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as image:
        return np.asarray(image.convert("RGB"))


def build_bundles(alpha: float, size: int, folder: Path, calibration: np.ndarray) -> dict:
    """`{label: bundle folder}` for float32, int8 (float input) and int8 (uint8 input)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(size, size, 3),
        alpha=alpha,
        weights=None,
        classes=10,
        classifier_activation=None,
    )
    mean, std = NORMALIZATION["mean"], NORMALIZATION["std"]
    x = (calibration.astype(np.float32) - mean) / std
    files = {
        "float32": to_tflite(model, "float32"),
        "int8": to_tflite(model, "int8", representative_data=x),
        "int8, uint8 input": to_tflite(
            model, "int8", representative_data=x, pixel_input=(mean, std)
        ),
    }
    bundles = {}
    for index, (label, content) in enumerate(files.items()):
        path = folder / f"model_{index}.tflite"
        path.write_bytes(content)
        (name,) = TFLiteModel(content).output_names
        bundles[label] = write_bundle(
            folder / f"bundle_{index}",
            path,
            task="classification",
            classes=[str(c) for c in range(10)],
            input_spec={"color": "RGB", "resize": "stretch", "normalization": NORMALIZATION},
            roles={name: "logits"},
            decoder={"activation": "softmax"},
            mode="float32" if label == "float32" else "int8",
            source={"benchmark": "robot_latency", "alpha": alpha},
        )
    return bundles


def time_frame(classifier: Classifier, jpeg: bytes) -> dict[str, float]:
    """Seconds of each stage of one frame, and the class it found."""
    start = time.perf_counter()
    frame = decode(jpeg)
    decoded = time.perf_counter()
    inputs = classifier.prepare([frame])
    prepared = time.perf_counter()
    raw = classifier.outputs(inputs)
    invoked = time.perf_counter()
    logits = raw["logits"].astype(np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    int(np.argmax(probabilities[0]))
    done = time.perf_counter()
    return {
        "decode": decoded - start,
        "prepare": prepared - decoded,
        "invoke": invoked - prepared,
        "outputs": done - invoked,
        "total": done - start,
    }


def measure(bundles: dict, frames: list[bytes], threads: int, rounds: int, warmup: int) -> dict:
    """`{label: {stage: median ms}}` with the contenders interleaved frame by frame."""
    classifiers = {label: Classifier(path, threads) for label, path in bundles.items()}
    for classifier in classifiers.values():
        for jpeg in frames[:warmup]:
            time_frame(classifier, jpeg)
    per_round = {label: [] for label in classifiers}
    for _ in range(rounds):
        timings = {label: [] for label in classifiers}
        for jpeg in frames:
            for label, classifier in classifiers.items():
                timings[label].append(time_frame(classifier, jpeg))
        for label, frames_timed in timings.items():
            per_round[label].append(
                {k: statistics.median(t[k] for t in frames_timed) for k in (*STAGES, "total")}
            )
    return {
        label: {k: 1000 * statistics.median(r[k] for r in rounds_) for k in (*STAGES, "total")}
        for label, rounds_ in per_round.items()
    } | {
        "ratio": {
            label: [r["total"] / f["total"] for r, f in zip(per_round[label], per_round["float32"])]
            for label in per_round
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    frames = camera_frames(args.frames)
    calibration = np.stack(
        [np.asarray(Image.fromarray(decode(f)).resize((args.size, args.size))) for f in frames]
    )
    with tempfile.TemporaryDirectory() as folder:
        bundles = build_bundles(args.alpha, args.size, Path(folder), calibration)
        sizes = {label: (Path(p) / "model.tflite").stat().st_size for label, p in bundles.items()}
        print(
            f"MobileNetV2-{args.alpha} at {args.size}×{args.size}, 640×480 JPEG frames, "
            f"{args.frames} frames × {args.rounds} rounds per thread count"
        )
        print("file sizes: " + ", ".join(f"{k} {v / 1024:.0f} kB" for k, v in sizes.items()))
        header = f"{'threads':>7}  {'model':<18}" + "".join(f"{s:>9}" for s in (*STAGES, "total"))
        print(header + "   float32 / this (per-round range)")
        verdicts = []
        for threads in args.threads:
            result = measure(bundles, frames, threads, args.rounds, warmup=3)
            ratios = result.pop("ratio")
            for label, stages in result.items():
                cells = "".join(f"{stages[s]:>9.2f}" for s in (*STAGES, "total"))
                speedups = [1 / r for r in ratios[label]]
                median = statistics.median(speedups)
                line = f"{threads:>7}  {label:<18}{cells}   {median:.2f}× "
                print(line + f"({min(speedups):.2f}–{max(speedups):.2f}×)")
                if label != "float32":
                    verdicts.append((threads, label, median))
        print("(milliseconds per frame, medians over rounds)")
        for threads, label, speedup in verdicts:
            verdict = "meets" if speedup >= GOAL else "misses"
            print(
                f"{threads} thread(s), {label}: end to end {speedup:.2f}× as fast as float32; "
                f"{verdict} the {GOAL:.0f}× goal"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
