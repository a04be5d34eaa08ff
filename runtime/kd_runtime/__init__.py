"""kd-keras on the robot: run a deploy bundle with numpy and LiteRT (`ai_edge_litert`) alone.

    from kd_runtime import Detector
    found = Detector("deploy/").detect(frame)      # uint8 RGB frame, any size

- `bundle`: the deploy folder (`model.tflite` + `bundle.json`), its schema, `load_bundle`;
- `model`: `TFLiteModel`, one `.tflite` in LiteRT with (de)quantization;
- `images`: resize, colour and normalisation of frames, in numpy;
- `centernet`: CenterNet peaks and boxes, in numpy;
- `predictors`: `Detector`, `Embedder` + `Gallery`, `Classifier`;
- `python -m kd_runtime BUNDLE INPUT`: one JSON line per frame of an image, a folder or a video.

Install on a robot with `pip install ./runtime` (add `[images]` for Pillow, `[video]` for
OpenCV); nothing here imports TensorFlow or kd-keras.
"""

from kd_runtime.bundle import Bundle, BundleError, load_bundle
from kd_runtime.centernet import Detections, decode_detections
from kd_runtime.model import TFLiteModel
from kd_runtime.predictors import Classifier, Detector, Embedder, FrameDetections, Gallery

__version__ = "0.1.0"

__all__ = [
    "Bundle",
    "BundleError",
    "Classifier",
    "Detections",
    "Detector",
    "Embedder",
    "FrameDetections",
    "Gallery",
    "TFLiteModel",
    "decode_detections",
    "load_bundle",
]
