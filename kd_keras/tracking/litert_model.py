"""MLflow "model from code": a `.tflite` file served through LiteRT.

MLflow copies this file into every logged TFLite model and runs it when the model is loaded, so it
imports only `numpy`, `mlflow` and `ai_edge_litert`: loading never needs TensorFlow or kd-keras.
The `.tflite` bytes are the model's `tflite` artifact, unchanged, so a loaded predictor runs exactly
the file that ships to the robot.

Inputs are real-valued `float32` arrays `[batch, ...]`. When the model's input tensor is integer
quantized (full-int8 export), values are quantized with the tensor's own scale and zero point,
`q = clip(round(x / scale) + zero_point)`; integer outputs are dequantized the same way,
`x = (q − zero_point) · scale`, so predictions are in the same units as the Keras model's.
"""

from __future__ import annotations

import threading

import mlflow
import numpy as np


class LiteRTModel(mlflow.pyfunc.PythonModel):
    """Runs the `tflite` artifact with `ai_edge_litert.interpreter.Interpreter`.

    `predict` returns an array for a single-output model and a dict `{output name: array}`
    otherwise. Calls are serialized: one interpreter is not safe to share between threads.
    """

    def load_context(self, context):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=context.artifacts["tflite"])
        self._interpreter.allocate_tensors()
        self._lock = threading.Lock()

    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input)
        with self._lock:
            outputs = [self._invoke(x[i : i + 1]) for i in range(len(x))]
        names = [d["name"] for d in self._interpreter.get_output_details()]
        stacked = [np.concatenate([o[k] for o in outputs]) for k in range(len(names))]
        return stacked[0] if len(stacked) == 1 else dict(zip(names, stacked))

    def _invoke(self, x: np.ndarray) -> list[np.ndarray]:
        interpreter = self._interpreter
        (detail,) = interpreter.get_input_details()
        interpreter.set_tensor(detail["index"], _quantize(x, detail))
        interpreter.invoke()
        return [
            _dequantize(interpreter.get_tensor(d["index"]), d)
            for d in interpreter.get_output_details()
        ]


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale > 0 and np.issubdtype(x.dtype, np.floating):
        info = np.iinfo(dtype)
        q = np.round(x / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(q.dtype, np.integer) and scale > 0:
        return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return q.copy()


mlflow.models.set_model(LiteRTModel())
