"""The deploy bundle: one `.tflite` file and the `bundle.json` that says how to use it.

    deploy/
      model.tflite   the shipped model, byte for byte
      bundle.json    schema "kd-keras-deploy", version 1

`bundle.json` holds what a robot needs and the `.tflite` cannot carry:

- `task`: `detection`, `classification` or `reid`; `classes`: the class names, in output order;
- `model`: the file name, its SHA-256 and size, and the export mode (`int8`, `float32`, ...);
- `input`: `height`, `width`, `channels`, `layout` (`NHWC`), `dtype` of the input tensor,
  `color` (`RGB` or `L`), `resize` (`stretch`: the frame is resized to the input size without
  keeping its aspect ratio, as in training) and `normalization` (`x = (pixel − mean) / std`,
  pixels in 0..255), plus `quantization` (`scale`, `zero_point`) of an integer input tensor;
- `outputs`: one entry per output tensor: signature `name`, `role` (`heatmap_logits`, `size`,
  `offset`, `logits` or `embedding`), `shape`, `dtype`, `quantization`;
- `decoder`: detection `stride`, `top_k`, `score_threshold`; re-id `embedding_dim` and
  `metric` (`cosine` or `euclidean`); classification `activation` (`softmax`);
- `source`: the run that made it: output folder, config hash, metrics, kd-keras version.

TFLite's own metadata (the `TFLITE_METADATA` buffer) is not used: LiteRT's Python interpreter
does not read it, and its writer is not packaged for this TensorFlow. A sidecar JSON is read
with the standard library alone.

This module imports only the standard library and numpy; `write_bundle` (the training side)
also opens the model in `ai_edge_litert` to record its tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA = "kd-keras-deploy"
SCHEMA_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.tflite"
TASKS = ("detection", "classification", "reid")
ROLES = {
    "detection": ("heatmap_logits", "size", "offset"),
    "classification": ("logits",),
    "reid": ("embedding",),
}


class BundleError(ValueError):
    """A deploy bundle that cannot be used: missing file, unknown schema, mismatched tensors."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A loaded deploy bundle: its folder and the parsed, checked `bundle.json`."""

    directory: Path
    spec: Mapping[str, Any]

    @property
    def task(self) -> str:
        return self.spec["task"]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.spec["classes"])

    @property
    def input(self) -> Mapping[str, Any]:
        return self.spec["input"]

    @property
    def outputs(self) -> list[Mapping[str, Any]]:
        return list(self.spec["outputs"])

    @property
    def decoder(self) -> Mapping[str, Any]:
        return self.spec["decoder"]

    @property
    def model_path(self) -> Path:
        return self.directory / self.spec["model"]["file"]

    def output_named(self, role: str) -> str:
        """The signature name of the output with `role` (e.g. `heatmap_logits`)."""
        for output in self.outputs:
            if output["role"] == role:
                return output["name"]
        raise BundleError(f"{self.directory}: no output has the role {role!r}.")


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Reads and checks the bundle in folder `path` (or its `bundle.json`).

    Raises:
        BundleError: a missing folder, `bundle.json` or model file; invalid JSON; another schema
            or an unknown schema version; an unknown task; a model whose SHA-256 differs.
    """
    path = Path(path)
    directory = path.parent if path.name == BUNDLE_FILE else path
    spec_file = directory / BUNDLE_FILE
    if not spec_file.is_file():
        raise BundleError(
            f"{spec_file} not found: pass a deploy folder written by kd-keras "
            "(<output_dir>/deploy)."
        )
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{spec_file} is not valid JSON: {error}.") from None
    if not isinstance(spec, dict) or spec.get("schema") != SCHEMA:
        raise BundleError(f"{spec_file} is not a kd-keras deploy bundle (schema {SCHEMA!r}).")
    version = spec.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{spec_file} has schema_version {version!r}; this runtime reads version "
            f"{SCHEMA_VERSION}. Install the kd-keras runtime that wrote it, or export again."
        )
    required = ("task", "classes", "model", "input", "outputs", "decoder")
    missing = [key for key in required if key not in spec]
    if missing:
        raise BundleError(f"{spec_file} lacks the keys {missing}.")
    if spec["task"] not in TASKS:
        raise BundleError(f"{spec_file}: unknown task {spec['task']!r}; expected one of {TASKS}.")
    bundle = Bundle(directory, spec)
    model = bundle.model_path
    if not model.is_file():
        raise BundleError(f"{model} not found: the bundle's model file is missing.")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    if digest != spec["model"].get("sha256"):
        raise BundleError(
            f"{model} does not match bundle.json (SHA-256 {digest[:12]}…, expected "
            f"{str(spec['model'].get('sha256'))[:12]}…): the model was replaced or damaged."
        )
    return bundle


def write_bundle(
    directory: str | os.PathLike,
    tflite_path: str | os.PathLike,
    *,
    task: str,
    classes: list[str],
    input_spec: Mapping[str, Any],
    roles: Mapping[str, str],
    decoder: Mapping[str, Any],
    mode: str,
    source: Mapping[str, Any],
) -> Path:
    """Writes the deploy bundle of `tflite_path` to `directory`, replacing it atomically.

    Args:
        directory: the bundle folder to write (e.g. `<output_dir>/deploy`).
        tflite_path: the shipped `.tflite`; copied byte for byte as `model.tflite`.
        task: `detection`, `classification` or `reid`.
        classes: class names in output order.
        input_spec: `color`, `resize` and `normalization` (`mean`, `std`); the size, dtype
            and quantization are read from the model.
        roles: output signature name -> role (the roles of `ROLES[task]`, each once).
        decoder: the task's decoder settings.
        mode: the export mode.
        source: where the model comes from (run folder, config hash, metrics, versions).

    Returns:
        The bundle folder.
    """
    from kd_runtime.model import TFLiteModel

    if task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}. Received: task={task!r}.")
    if sorted(roles.values()) != sorted(ROLES[task]):
        raise ValueError(
            f"Expected the output roles {ROLES[task]} for {task}. Received: roles={dict(roles)}."
        )
    tflite_path = Path(tflite_path)
    content = tflite_path.read_bytes()
    model = TFLiteModel(content)
    height, width, channels = model.input_shape[1:]
    spec = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "classes": [str(c) for c in classes],
        "model": {
            "file": MODEL_FILE,
            "sha256": hashlib.sha256(content).hexdigest(),
            "size_bytes": len(content),
            "mode": mode,
        },
        "input": {
            "name": model.input_name,
            "height": height,
            "width": width,
            "channels": channels,
            "layout": "NHWC",
            "dtype": model.input_dtype.name,
            "quantization": model.input_quantization,
            **dict(input_spec),
        },
        "outputs": [
            {
                "name": name,
                "role": roles[name],
                "shape": model.output_shapes[name],
                "dtype": model.output_dtypes[name].name,
                "quantization": model.output_quantization[name],
            }
            for name in model.output_names
            if name in roles
        ],
        "decoder": dict(decoder),
        "source": dict(source),
    }
    unknown = sorted(set(roles) - set(model.output_names))
    if unknown:
        raise ValueError(
            f"{tflite_path} has no outputs {unknown}; its outputs are {model.output_names}."
        )
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / MODEL_FILE).write_bytes(content)
    (staging / BUNDLE_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    return directory


__all__ = [
    "BUNDLE_FILE",
    "MODEL_FILE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "load_bundle",
    "write_bundle",
]
