"""`python -m kd_runtime BUNDLE INPUT`: run a deploy bundle on an image, a folder or a video.

Writes one JSON line per frame to stdout and the frame rate to stderr. INPUT is an image file
(Pillow), a folder of images (sorted by name) or a video file (OpenCV). A bad bundle or input
stops with one line, `error: ...`, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kd_runtime.bundle import BundleError, load_bundle
from kd_runtime.predictors import Classifier, Detector, Embedder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


class InputError(ValueError):
    """An input that cannot be read as frames."""


def read_image(path: Path) -> np.ndarray:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise InputError("reading image files needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except OSError as error:
        raise InputError(f"{path} is not a readable image: {error}") from None


def video_frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import cv2
    except ImportError:
        raise InputError("reading video needs OpenCV: pip install opencv-python-headless") from None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path} cannot be opened as a video")
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield str(index), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """`(name, RGB uint8 frame)` of an image, a folder of images or a video."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for file in files:
            yield file.name, read_image(file)
    elif not path.is_file():
        raise InputError(f"{path} not found")
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        yield from video_frames(path)
    else:
        yield path.name, read_image(path)


def predictor(bundle_path: str, threads: int, score_threshold: float | None):
    bundle = load_bundle(bundle_path)
    if bundle.task == "detection":
        detector = Detector(bundle, threads, score_threshold=score_threshold)
        return lambda frame: {"detections": detector.detect(frame).to_json()}
    if bundle.task == "reid":
        embedder = Embedder(bundle, threads)
        return lambda frame: {"embedding": [round(float(v), 6) for v in embedder.embed([frame])[0]]}
    classifier = Classifier(bundle, threads)

    def classify(frame):
        name, probability = classifier.classify(frame)
        return {"class": name, "probability": round(probability, 6)}

    return classify


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m kd_runtime", description=description)
    parser.add_argument("bundle", help="the deploy folder (model.tflite + bundle.json)")
    parser.add_argument("input", help="an image, a folder of images or a video file")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1)")
    parser.add_argument("--score-threshold", type=float, default=None, help="detection only")
    args = parser.parse_args(argv)
    try:
        run = predictor(args.bundle, args.threads, args.score_threshold)
        count, start = 0, time.perf_counter()
        for name, frame in frames(Path(args.input)):
            print(json.dumps({"frame": name, **run(frame)}), flush=True)
            count += 1
        seconds = time.perf_counter() - start
    except (BundleError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rate = count / seconds if seconds > 0 else float("inf")
    print(f"{count} frames, {rate:.1f} frames per second", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
