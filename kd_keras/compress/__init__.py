"""Compression for deployment: TF-MOT pruning and QAT (distillation-aware), and choosing sparsity.

Each function takes and returns a plain functional tf_keras model, so a compressed student can be
fine-tuned as the `student` of a `Distiller` (with `UpdatePruningStep` among the callbacks when it
is pruned), then stripped and exported with `kd_keras.export.to_tflite`.
"""

from kd_keras.compress.lowrank import decompose, lowrank_report
from kd_keras.compress.prune import (
    UpdatePruningStep,
    is_pruned,
    prune,
    pruning_schedule,
    sparsity_report,
    strip,
    wrapped_layer_name,
    zero_smallest,
)
from kd_keras.compress.quantize import (
    OutputQuantizeConfig,
    calibrate_quantization_ranges,
    is_quantize_aware,
    kernel_sparsity,
    qat_refusal,
    quantize_aware,
    quantize_scope,
    quantized_kernels,
    unsupported_layers,
)
from kd_keras.compress.select import (
    SparsityCurve,
    adapt_batchnorm,
    choose_sparsity,
    save_curve,
    sparsity_curve,
)

__all__ = [
    "OutputQuantizeConfig",
    "SparsityCurve",
    "UpdatePruningStep",
    "adapt_batchnorm",
    "choose_sparsity",
    "decompose",
    "is_pruned",
    "calibrate_quantization_ranges",
    "is_quantize_aware",
    "kernel_sparsity",
    "lowrank_report",
    "prune",
    "pruning_schedule",
    "qat_refusal",
    "quantize_aware",
    "quantize_scope",
    "quantized_kernels",
    "save_curve",
    "sparsity_curve",
    "sparsity_report",
    "strip",
    "unsupported_layers",
    "wrapped_layer_name",
    "zero_smallest",
]
