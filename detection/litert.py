"""Running an exported CenterNet `.tflite` in LiteRT (`ai_edge_litert`), the runtime robots use.

`LiteRTDetector(path)` is a predictor like `detection.evaluation.keras_predictor(model)`: images in,
`[heatmap, size, offset]` out, so the same decoding and COCOeval serve the Keras model and the int8
file. Outputs are matched to heads through the signature's output names, which keep the Keras layer
names (`heatmap`, or `quant_heatmap` after QAT).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detection.centernet.centernet_heads import HEAD_NAMES


class LiteRTDetector:
    """A `.tflite` CenterNet in the LiteRT interpreter, one image per invoke (as on a robot).

    Args:
        model: the flatbuffer bytes or a `.tflite` path.
        num_threads: interpreter threads.
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
        self.runner = self.interpreter.get_signature_runner(key)
        (self.input_name,) = signatures[key]["inputs"]
        self.output_names = []
        for head in HEAD_NAMES:
            matches = [
                n for n in signatures[key]["outputs"] if n.split("_", 1)[-1] == head or n == head
            ]
            if len(matches) != 1:
                raise ValueError(
                    f"Cannot find the {head!r} output of this .tflite: its outputs are "
                    f"{signatures[key]['outputs']}. Export a model built by "
                    f"detection.centernet.build_centernet. Received: head={head!r}."
                )
            self.output_names.append(matches[0])
        details = self.runner.get_input_details()[self.input_name]
        self.input_dtype = details["dtype"]
        self.input_quantization = details["quantization"]

    def _input(self, image: np.ndarray) -> np.ndarray:
        if np.issubdtype(self.input_dtype, np.integer):
            scale, zero_point = self.input_quantization
            info = np.iinfo(self.input_dtype)
            image = np.clip(np.round(image / scale + zero_point), info.min, info.max)
        return image.astype(self.input_dtype)

    def _output(self, name: str, value: np.ndarray) -> np.ndarray:
        details = self.runner.get_output_details()[name]
        if np.issubdtype(details["dtype"], np.integer):
            scale, zero_point = details["quantization"]
            return (value.astype(np.float32) - zero_point) * scale
        return value.astype(np.float32)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        """`[heatmap_logits, size, offset]` for float32 images `[b, h, w, 3]` in [0, 1]."""
        per_image = []
        for image in np.asarray(images, np.float32):
            outputs = self.runner(**{self.input_name: self._input(image[None])})
            per_image.append([self._output(n, outputs[n]) for n in self.output_names])
        return [np.concatenate(parts) for parts in zip(*per_image)]
