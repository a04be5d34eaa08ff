"""A `.tflite` file as an MLflow pyfunc model that predicts with LiteRT."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import kd_runtime

_MODEL_CODE = Path(__file__).with_name("litert_model.py")
#: The robot runtime the pyfunc predicts through, kept with every logged model.
_RUNTIME_CODE = Path(kd_runtime.__file__).parent


def tflite_signature(tflite_path: str | os.PathLike) -> ModelSignature:
    """The pyfunc signature of a `.tflite` file: float32 tensors with a free batch dimension.

    Quantized integer tensors are described as float32 because the pyfunc quantizes inputs and
    dequantizes outputs (see `litert_model.py`).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise ValueError(
            "Expected a .tflite model with exactly one input tensor (the pyfunc feeds one array). "
            f"Received: {len(inputs)} inputs in {tflite_path}."
        )
    return ModelSignature(
        Schema([_spec(d, name=None) for d in inputs]),
        Schema([_spec(d, name=d["name"]) for d in interpreter.get_output_details()]),
    )


def save_tflite_model(
    tflite_path: str | os.PathLike,
    path: str | os.PathLike,
    input_example: np.ndarray | None = None,
    calibration: Mapping | None = None,
    bundle: str | os.PathLike | None = None,
) -> Path:
    """Saves `tflite_path` as a pyfunc model directory at `path` (replacing it atomically).

    Args:
        tflite_path: the exact `.tflite` file that ships; it is copied byte for byte.
        path: the model directory to write.
        input_example: a few real inputs `[n, ...]`; default one all-zero example.
        calibration: description of the int8 calibration data (dataset, examples, seed), kept in
            the model's metadata.
        bundle: the run's deploy folder (`kd_runtime.bundle`), kept as the `bundle` artifact.

    Returns:
        `path`.
    """
    tflite_path = Path(tflite_path)
    if not tflite_path.is_file():
        raise FileNotFoundError(
            f"Expected an existing .tflite file to log as a model. Received: tflite_path="
            f"{str(tflite_path)!r}."
        )
    signature = tflite_signature(tflite_path)
    if input_example is None:
        shape = signature.inputs.inputs[0].shape
        input_example = np.zeros((1, *shape[1:]), np.float32)
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    _save(staging, tflite_path, signature, input_example, calibration, bundle)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(staging, path)
    return path


def _save(staging, tflite_path: Path, signature, input_example, calibration, bundle) -> None:
    artifacts = {"tflite": str(tflite_path)}
    if bundle is not None:
        artifacts["bundle"] = str(bundle)
    mlflow.pyfunc.save_model(
        str(staging),
        python_model=str(_MODEL_CODE),
        artifacts=artifacts,
        code_paths=[str(_RUNTIME_CODE)],
        signature=signature,
        input_example=np.asarray(input_example, np.float32),
        pip_requirements=[_pinned("ai-edge-litert"), _pinned("numpy"), _pinned("mlflow")],
        metadata={
            "format": "tflite",
            "runtime": "ai_edge_litert",
            "tflite_sha256": hashlib.sha256(tflite_path.read_bytes()).hexdigest(),
            "tflite_size_bytes": tflite_path.stat().st_size,
            "calibration": dict(calibration) if calibration else None,
        },
    )


def _spec(detail: dict, name: str | None) -> TensorSpec:
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer) and detail["quantization"][0] > 0:
        dtype = np.dtype(np.float32)
    shape = (-1, *(int(s) for s in detail["shape"][1:]))
    return TensorSpec(dtype, shape, name)


def _pinned(distribution: str) -> str:
    return f"{distribution}=={importlib_metadata.version(distribution)}"
