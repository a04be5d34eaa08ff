"""One `.tflite` model in LiteRT: real-valued arrays in and out, one invoke per example.

Integer tensors (full-int8 export) are quantized and dequantized with the tensor's own scale and
zero point,

    q = clip(round(x / scale) + zero_point, qmin, qmax)        x = (q − zero_point) · scale

so callers always work in the Keras model's units. An integer input whose values are already
of its dtype (a camera's uint8 frame fed to a uint8-input model) is passed through unchanged.
Every kd-keras path that runs a `.tflite` (the task evaluations, the MLflow model, the robot's
`Detector`, `Embedder` and `Classifier`) runs it through this class.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np


class TFLiteModel:
    """A `.tflite` flatbuffer (bytes or path) with one signature, in `ai_edge_litert`.

    Args:
        model: the flatbuffer bytes or a `.tflite` path.
        num_threads: interpreter threads.

    Calls are serialized: one interpreter is not safe to share between threads.
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        content = model if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
        self.interpreter = Interpreter(model_content=bytes(content), num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(
                "Expected a .tflite with one signature (as converted from a Keras model). "
                f"Received: signatures={list(signatures)}."
            )
        key = next(iter(signatures))
        self._runner = self.interpreter.get_signature_runner(key)
        inputs = signatures[key]["inputs"]
        if len(inputs) != 1:
            raise ValueError(f"Expected a .tflite with one input. Received: inputs={inputs}.")
        (self.input_name,) = inputs
        self.output_names: list[str] = list(signatures[key]["outputs"])
        self._input = self._runner.get_input_details()[self.input_name]
        self._outputs = self._runner.get_output_details()
        tensor_names = {d["index"]: d["name"] for d in self.interpreter.get_output_details()}
        #: signature output name -> the tensor's own name (what `get_output_details` calls it).
        self.tensor_names = {n: tensor_names[self._outputs[n]["index"]] for n in self.output_names}
        self._lock = threading.Lock()

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self._input["shape"]]

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def input_quantization(self) -> dict | None:
        return _quantization(self._input)

    @property
    def output_shapes(self) -> dict[str, list[int]]:
        return {n: [int(d) for d in self._outputs[n]["shape"]] for n in self.output_names}

    @property
    def output_dtypes(self) -> dict[str, np.dtype]:
        return {n: np.dtype(self._outputs[n]["dtype"]) for n in self.output_names}

    @property
    def output_quantization(self) -> dict[str, dict | None]:
        return {n: _quantization(self._outputs[n]) for n in self.output_names}

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs (float32, dequantized) by signature name for a batch `x` `[n, ...]`."""
        x = np.asarray(x)
        per_example = []
        with self._lock:
            for index in range(len(x)):
                outputs = self._runner(**{self.input_name: self.quantize(x[index : index + 1])})
                per_example.append({n: self.dequantize(n, outputs[n]) for n in self.output_names})
        if not per_example:
            shapes = self.output_shapes
            return {n: np.zeros([0, *shapes[n][1:]], np.float32) for n in self.output_names}
        return {n: np.concatenate([o[n] for o in per_example]) for n in self.output_names}

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """`x` as the input tensor's dtype (quantized when it is integer and `x` is float)."""
        dtype, quantization = self.input_dtype, self.input_quantization
        if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating):
            if quantization is None:
                raise ValueError(f"The {dtype.name} input of this model has no quantization.")
            info = np.iinfo(dtype)
            q = np.round(x / quantization["scale"]) + quantization["zero_point"]
            return np.clip(q, info.min, info.max).astype(dtype)
        if np.issubdtype(dtype, np.integer) and x.dtype != dtype:
            raise ValueError(
                f"This model takes {dtype.name} input; received {x.dtype.name} values. Pass "
                f"{dtype.name} pixels or float values in the model's units."
            )
        return x.astype(dtype)

    def dequantize(self, name: str, q: np.ndarray) -> np.ndarray:
        quantization = self.output_quantization[name]
        if np.issubdtype(q.dtype, np.integer) and quantization is not None:
            zero_point, scale = quantization["zero_point"], quantization["scale"]
            return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return np.asarray(q, np.float32).copy()


def _quantization(details: dict) -> dict | None:
    scale, zero_point = details["quantization"]
    if not np.issubdtype(np.dtype(details["dtype"]), np.integer) or scale == 0:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


__all__ = ["TFLiteModel"]
