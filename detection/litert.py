"""Running an exported CenterNet `.tflite` in LiteRT (`ai_edge_litert`), the runtime robots use.

`LiteRTDetector(path)` is a predictor like `detection.evaluation.keras_predictor(model)`: images in,
`[heatmap, size, offset]` out, so the same decoding and COCOeval serve the Keras model and the int8
file. It runs the file through `kd_runtime.TFLiteModel`, the runtime a robot runs. Outputs are
matched to heads through the signature's output names, which keep the Keras layer names
(`heatmap`, or `quant_heatmap` after QAT).
"""

from __future__ import annotations

import os

import numpy as np

from detection.centernet.centernet_heads import HEAD_NAMES
from kd_runtime.model import TFLiteModel

#: The bundle role of each CenterNet head (`kd_runtime.bundle.ROLES["detection"]`).
HEAD_ROLES = {"heatmap": "heatmap_logits", "size": "size", "offset": "offset"}


def head_outputs(output_names: list[str]) -> list[str]:
    """The signature output names of the `heatmap`, `size` and `offset` heads, in that order."""
    names = []
    for head in HEAD_NAMES:
        matches = [n for n in output_names if n == head or n.split("_", 1)[-1] == head]
        if len(matches) != 1:
            raise ValueError(
                f"Cannot find the {head!r} output of this .tflite: its outputs are "
                f"{output_names}. Export a model built by detection.centernet.build_centernet. "
                f"Received: head={head!r}."
            )
        names.append(matches[0])
    return names


class LiteRTDetector:
    """A `.tflite` CenterNet in the LiteRT interpreter, one image per invoke (as on a robot).

    Args:
        model: the flatbuffer bytes or a `.tflite` path.
        num_threads: interpreter threads.
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int = 1):
        self.model = TFLiteModel(model, num_threads=num_threads)
        self.output_names = head_outputs(self.model.output_names)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        """`[heatmap_logits, size, offset]` for float32 images `[b, h, w, 3]` in [0, 1]."""
        outputs = self.model(np.asarray(images, np.float32))
        return [outputs[name] for name in self.output_names]
