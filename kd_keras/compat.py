"""Every private TensorFlow and TF-MOT symbol kd-keras uses, imported here and nowhere else.

TF-MOT's public API has no way to list a model's prunable layers, tell a quantization wrapper
from any layer, or reach the default 8-bit registry; TensorFlow's has no way to freeze a concrete
function for FLOP counting, to turn op determinism off or to configure the multi-worker
coordination service, nor to edit a converted `.tflite` (the camera-native input's
quantization). These come from private modules that an upgrade may move:
`tests/kd_keras/test_compat.py` imports each one and names the one that went. (tf_keras's
private graph attributes are read in `kd_keras.models.graph`.)
"""

from __future__ import annotations

from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow.python.eager import context as eager_context
from tensorflow.python.framework import config as framework_config
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_layer,
    quantize_wrapper,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry,
)
from tensorflow_model_optimization.python.core.sparsity.keras import (
    prune_registry,
    pruning_wrapper,
)

#: The symbols the code reads from the modules above, as `(module, attribute)`.
USED = (
    (pruning_wrapper, "collect_prunable_layers"),
    (prune_registry, "PruneRegistry"),
    (quantize_wrapper, "QuantizeWrapper"),
    (quantize_layer, "QuantizeLayer"),
    (default_8bit_quantize_registry, "Default8BitQuantizeRegistry"),
    (eager_context, "context"),
    (coordination_config_pb2, "CoordinatedJob"),
    (framework_config, "disable_op_determinism"),
    (framework_config, "is_op_determinism_enabled"),
    (flatbuffer_utils, "convert_bytearray_to_object"),
    (flatbuffer_utils, "convert_object_to_bytearray"),
    (tflite_schema, "BuiltinOperator"),
)

# TensorFlow's public API can turn op determinism on but not off, nor say whether it is on.
disable_op_determinism = framework_config.disable_op_determinism
is_op_determinism_enabled = framework_config.is_op_determinism_enabled

__all__ = [
    "USED",
    "convert_variables_to_constants_v2",
    "coordination_config_pb2",
    "default_8bit_quantize_registry",
    "disable_op_determinism",
    "eager_context",
    "flatbuffer_utils",
    "is_op_determinism_enabled",
    "prune_registry",
    "pruning_wrapper",
    "quantize_layer",
    "quantize_wrapper",
    "tflite_schema",
]
