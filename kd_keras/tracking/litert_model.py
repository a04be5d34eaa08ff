"""MLflow "model from code": a `.tflite` file served through LiteRT.

MLflow copies this file into every logged TFLite model and runs it when the model is loaded. It
predicts through `kd_runtime.TFLiteModel`, the robot's own runtime, which MLflow keeps with the
model (`code_paths`), so loading needs `numpy`, `mlflow` and `ai_edge_litert` only: never
TensorFlow or kd-keras. The `.tflite` bytes are the model's `tflite` artifact, unchanged, so a
loaded predictor runs exactly the file that ships to the robot; a run's deploy bundle (the same
file and its `bundle.json`) is the `bundle` artifact.

Inputs are real-valued `float32` arrays `[batch, ...]`. When the model's input tensor is integer
quantized (full-int8 export), values are quantized with the tensor's own scale and zero point,
`q = clip(round(x / scale) + zero_point)`; integer outputs are dequantized the same way,
`x = (q − zero_point) · scale`, so predictions are in the same units as the Keras model's.
"""

from __future__ import annotations

import mlflow
import numpy as np


class LiteRTModel(mlflow.pyfunc.PythonModel):
    """Runs the `tflite` artifact with `kd_runtime.TFLiteModel`.

    `predict` returns an array for a single-output model and a dict `{output tensor name:
    array}` otherwise.
    """

    def load_context(self, context):
        from kd_runtime.model import TFLiteModel

        self._model = TFLiteModel(context.artifacts["tflite"])

    def predict(self, context, model_input, params=None):
        outputs = self._model(np.asarray(model_input))
        named = {self._model.tensor_names[name]: value for name, value in outputs.items()}
        return next(iter(named.values())) if len(named) == 1 else named


mlflow.models.set_model(LiteRTModel())
