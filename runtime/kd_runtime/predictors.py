"""What a robot calls: `Detector`, `Embedder` (with `Gallery`) and `Classifier` on a deploy bundle.

    detector = Detector("deploy/")
    found = detector.detect(frame)          # frame: uint8 [h, w, 3] RGB, any size
    found.boxes, found.scores, found.names  # boxes in the frame's own pixels

Each one loads the bundle (`load_bundle`), opens its `.tflite` in LiteRT and checks that the
model's tensors are the ones `bundle.json` describes, then prepares frames as training did
(`kd_runtime.images`) and decodes the outputs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from kd_runtime.bundle import Bundle, BundleError, load_bundle
from kd_runtime.centernet import Detections, decode_detections
from kd_runtime.images import model_input, prepared_pixels
from kd_runtime.model import TFLiteModel

BundleLike = Bundle | str | os.PathLike


def open_model(bundle: Bundle, num_threads: int = 1) -> TFLiteModel:
    """The bundle's `.tflite` in LiteRT, checked against `bundle.json`.

    Raises:
        BundleError: a file LiteRT cannot read, or an input or output whose name, shape,
            dtype or quantization differs from the JSON.
    """
    try:
        model = TFLiteModel(bundle.model_path, num_threads=num_threads)
    except (ValueError, RuntimeError) as error:
        raise BundleError(f"{bundle.model_path} cannot be loaded in LiteRT: {error}") from None
    expected = bundle.input
    found = {
        "name": model.input_name,
        "shape": model.input_shape[1:],
        "dtype": model.input_dtype.name,
        "quantization": model.input_quantization,
    }
    wanted = {
        "name": expected["name"],
        "shape": [expected["height"], expected["width"], expected["channels"]],
        "dtype": expected["dtype"],
        "quantization": expected["quantization"],
    }
    problems = [f"input {k} {found[k]} != {wanted[k]}" for k in found if found[k] != wanted[k]]
    for output in bundle.outputs:
        name = output["name"]
        if name not in model.output_names:
            problems.append(f"no output {name!r} (the model has {model.output_names})")
            continue
        actual = {
            "shape": model.output_shapes[name],
            "dtype": model.output_dtypes[name].name,
            "quantization": model.output_quantization[name],
        }
        problems += [
            f"output {name} {key} {actual[key]} != {output[key]}"
            for key in actual
            if actual[key] != output[key]
        ]
    if problems:
        raise BundleError(f"{bundle.model_path} does not match bundle.json: {'; '.join(problems)}.")
    return model


class _Predictor:
    task = ""

    def __init__(self, bundle: BundleLike, num_threads: int = 1) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if self.bundle.task != self.task:
            raise BundleError(
                f"{self.bundle.directory} holds a {self.bundle.task} model; "
                f"{type(self).__name__} runs {self.task} bundles."
            )
        self.model = open_model(self.bundle, num_threads)

    def prepare(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Frames (uint8, any size) as one input batch `[n, h, w, c]`."""
        pixels = np.stack([prepared_pixels(frame, self.bundle.input) for frame in frames])
        return model_input(pixels, self.bundle.input)

    def outputs(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by role (`heatmap_logits`, `embedding`...) for a prepared batch."""
        values = self.model(inputs)
        return {output["role"]: values[output["name"]] for output in self.bundle.outputs}


@dataclasses.dataclass(frozen=True)
class FrameDetections:
    """Detections in a frame's own pixels: `boxes` `[n, 4]` (`x_min, y_min, x_max, y_max`),
    `scores` `[n]`, `classes` `[n]` indices and their `names`, sorted by score."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self) -> list[dict]:
        return [
            {"box": [round(float(v), 2) for v in box], "score": round(float(s), 4), "class": n}
            for box, s, n in zip(self.boxes, self.scores, self.names)
        ]


class Detector(_Predictor):
    """A CenterNet bundle: `detect(frame)` gives boxes in the frame's pixels.

    Args:
        bundle: the deploy folder (or a loaded `Bundle`).
        num_threads: LiteRT threads.
        score_threshold, top_k: override the bundle's decoder settings.
    """

    task = "detection"

    def __init__(
        self,
        bundle: BundleLike,
        num_threads: int = 1,
        score_threshold: float | None = None,
        top_k: int | None = None,
    ) -> None:
        super().__init__(bundle, num_threads)
        decoder = self.bundle.decoder
        self.stride = int(decoder["stride"])
        self.top_k = int(decoder["top_k"] if top_k is None else top_k)
        self.score_threshold = float(
            decoder["score_threshold"] if score_threshold is None else score_threshold
        )

    def decode(self, outputs: dict[str, np.ndarray]) -> list[Detections]:
        """Boxes in model-input pixels from raw outputs (by role)."""
        return decode_detections(
            outputs["heatmap_logits"],
            outputs["size"],
            outputs["offset"],
            self.stride,
            self.top_k,
            self.score_threshold,
        )

    def detect(self, frame: np.ndarray) -> FrameDetections:
        """Detections of one uint8 frame `[h, w, 3]`, boxes in its own pixels."""
        (found,) = self.detect_all([frame])
        return found

    def detect_all(self, frames: Sequence[np.ndarray]) -> list[FrameDetections]:
        """`detect` for several frames (of any sizes)."""
        spec = self.bundle.input
        results = []
        for frame in frames:
            (found,) = self.decode(self.outputs(self.prepare([frame])))
            height, width = np.asarray(frame).shape[:2]
            found = found.scaled(width / spec["width"], height / spec["height"])
            names = tuple(self.bundle.classes[int(c)] for c in found.classes)
            results.append(FrameDetections(found.boxes, found.scores, found.classes, names))
        return results


class Embedder(_Predictor):
    """A re-id bundle: `embed(crops)` gives one embedding per person crop.

    Embeddings are L2-normalised for the `cosine` metric (so a dot product is the cosine),
    left as they are for `euclidean`.
    """

    task = "reid"

    @property
    def metric(self) -> str:
        return self.bundle.decoder["metric"]

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings `[n, embedding_dim]` of uint8 crops (any sizes)."""
        vectors = self.outputs(self.prepare(crops))["embedding"]
        if self.metric == "cosine":
            vectors = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
        return vectors

    def gallery(self) -> Gallery:
        """An empty gallery that matches by this bundle's metric."""
        return Gallery(self.metric)


class Gallery:
    """Known people's embeddings; `match` ranks them for each query by the bundle's metric.

    Distances: `1 − cos(a, b)` for `cosine`, `‖a − b‖` for `euclidean` (those of the re-id
    evaluation).
    """

    def __init__(self, metric: str = "cosine") -> None:
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"Expected metric 'cosine' or 'euclidean'. Received: {metric!r}.")
        self.metric = metric
        self.embeddings = np.zeros((0, 0), np.float32)
        self.identities: list[str] = []

    def __len__(self) -> int:
        return len(self.identities)

    def add(self, embeddings: np.ndarray, identities: Sequence[str]) -> None:
        embeddings = np.asarray(embeddings, np.float32)
        if len(embeddings) != len(identities):
            raise ValueError(
                f"Expected one identity per embedding. Received: {len(embeddings)} embeddings, "
                f"{len(identities)} identities."
            )
        if len(self.identities) and embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"Expected embeddings of dimension {self.embeddings.shape[1]}. Received: "
                f"{embeddings.shape[1]}."
            )
        self.embeddings = (
            embeddings if not self.identities else np.concatenate([self.embeddings, embeddings])
        )
        self.identities += [str(i) for i in identities]

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """`[queries, gallery]` distances."""
        queries = np.asarray(queries, np.float32)
        if self.metric == "cosine":
            a = queries / (np.linalg.norm(queries, axis=1, keepdims=True) + 1e-12)
            b = self.embeddings / (np.linalg.norm(self.embeddings, axis=1, keepdims=True) + 1e-12)
            return 1.0 - a @ b.T
        squared = (
            np.sum(queries**2, 1)[:, None]
            + np.sum(self.embeddings**2, 1)[None]
            - 2.0 * queries @ self.embeddings.T
        )
        return np.sqrt(np.maximum(squared, 0.0))

    def match(self, queries: np.ndarray, k: int = 1) -> list[list[tuple[str, float]]]:
        """For each query, the `k` nearest gallery entries as `(identity, distance)`."""
        if not self.identities:
            raise ValueError("The gallery is empty: add embeddings of known people first.")
        distances = self.distances(queries)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return [
            [(self.identities[j], float(row[j])) for j in ranks]
            for row, ranks in zip(distances, order)
        ]


class Classifier(_Predictor):
    """A classification bundle: `classify(frame)` gives the class name and probabilities."""

    task = "classification"

    def probabilities(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax probabilities `[n, classes]` of uint8 frames (any sizes)."""
        logits = self.outputs(self.prepare(frames))["logits"].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def classify(self, frame: np.ndarray) -> tuple[str, float]:
        """The most probable class name of one frame and its probability."""
        (probabilities,) = self.probabilities([frame])
        best = int(np.argmax(probabilities))
        return self.bundle.classes[best], float(probabilities[best])


__all__ = ["Classifier", "Detector", "Embedder", "FrameDetections", "Gallery", "open_model"]
