"""Quantization-aware training (TF-MOT 8-bit), pruning-preserving QAT and custom-layer configs.

`quantize_aware(model)` returns a copy with fake-quantization on weights and activations. It can be
trained on its own or as the student of a `Distiller` (KD-aware QAT), then converted with
`kd_keras.export.to_tflite(model, mode="int8")`; the learned ranges make a representative dataset
unnecessary. `preserve_sparsity=True` (PQAT) keeps the zeros of a pruned-and-stripped model.

TF-MOT starts every activation range at [-6, 6] and moves it by 0.1% per training step, so a short
QAT run keeps clipping activations outside ±6 (box sizes in pixels, large logits). Passing
`calibration_data` sets each activation range to the values seen on a few batches first, as
post-training calibration would; training then refines them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from kd_keras.compat import default_8bit_quantize_registry, quantize_layer, quantize_wrapper
from kd_keras.compress.prune import is_pruned, sparsity_report
from kd_keras.models.graph import check_functional, describe_layers
from kd_keras.models.layers import InputAffine
from kd_keras.models.lma import LMA, LMAQuantizeConfig

_quantization = tfmot.quantization.keras
_PACKAGE = "kd_keras"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OutputQuantizeConfig(_quantization.QuantizeConfig):
    """Quantizes only a layer's output (8 bits, moving-average range); no weights.

    The right choice for custom element-wise layers such as activations: their output gets an int8
    range learned during QAT, and the converter keeps the op in between quantized tensors.

    Example:
        >>> qat = quantize_aware(model, quantize_configs={"Square": OutputQuantizeConfig()})
    """

    def __init__(self, num_bits: int = 8):
        self.num_bits = num_bits

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [
            _quantization.quantizers.MovingAverageQuantizer(
                num_bits=self.num_bits, per_axis=False, symmetric=False, narrow_range=False
            )
        ]

    def get_config(self):
        return {"num_bits": self.num_bits}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# kd_keras's own custom layers and the config each gets when the caller passes none for it.
# Layers with no TF-MOT 8-bit rule whose output alone needs a range: kd_keras's own, and the
# element-wise layers of `tf_keras.applications` networks (squeeze-excite gates, input scaling).
_DEFAULT_CONFIGS = {
    LMA: LMAQuantizeConfig,
    InputAffine: OutputQuantizeConfig,
    keras.layers.Multiply: OutputQuantizeConfig,
    keras.layers.Rescaling: OutputQuantizeConfig,
    keras.layers.Normalization: OutputQuantizeConfig,
}
# Layers TF-MOT's quantize wrapper cannot call at all, whatever their config.
_UNWRAPPABLE = {
    "TFOpLambda": "tf_keras builds it for a TensorFlow op applied to a Keras tensor (e.g. the "
    "`x + 3` of mobilenet_v3_small's hard-swish), and TF-MOT's wrapper cannot call it",
}


def qat_refusal(model: keras.Model) -> str | None:
    """Why TF-MOT cannot make `model` quantization-aware, or None when it can.

    A model it refuses still exports to full int8 with post-training calibration
    (`kd_keras.export.to_tflite(model, "int8", representative_data=...)`).
    """
    reasons = {}
    for layer in model.layers:
        reason = _UNWRAPPABLE.get(type(layer).__name__)
        if reason is not None:
            reasons.setdefault(type(layer).__name__, (reason, []))[1].append(layer.name)
    if not reasons:
        return None
    return "; ".join(
        f"{len(names)} {kind} layer(s) such as {names[0]!r}: {reason}"
        for kind, (reason, names) in reasons.items()
    )


def _with_defaults(
    model: keras.Model, quantize_configs: Mapping[str, _quantization.QuantizeConfig] | None
) -> dict[str, _quantization.QuantizeConfig]:
    """`quantize_configs` plus, by layer name, a default config for each kd_keras layer it omits."""
    configs = dict(quantize_configs or {})
    for layer in model.layers:
        default = _DEFAULT_CONFIGS.get(type(layer))
        if default and layer.name not in configs and type(layer).__name__ not in configs:
            configs[layer.name] = default()
    return configs


def unsupported_layers(
    model: keras.Model, quantize_configs: Mapping[str, _quantization.QuantizeConfig] | None = None
) -> list[keras.layers.Layer]:
    """Layers of `model` that TF-MOT's 8-bit scheme cannot quantize and that have no config."""
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    configs = _with_defaults(model, quantize_configs)
    missing = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name in configs or type(layer).__name__ in configs:
            continue
        opaque = isinstance(layer, keras.layers.Lambda | keras.Model)
        # BatchNorm is folded into the Conv/Dense before it by TF-MOT's layout transforms.
        known = isinstance(layer, _FOLDED) or registry.supports(layer)
        if opaque or not known:
            missing.append(layer)
    return missing


# Handled by TF-MOT's graph transforms rather than its per-layer registry.
_FOLDED = (
    keras.layers.BatchNormalization,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def quantize_aware(
    model: keras.Model,
    *,
    preserve_sparsity: bool | None = None,
    quantize_configs: Mapping[str, _quantization.QuantizeConfig] | None = None,
    calibration_data: Iterable | None = None,
    calibration_batches: int = 8,
) -> keras.Model:
    """A quantization-aware copy of `model` (TF-MOT default 8-bit scheme), weights kept.

    Args:
        model: a functional or Sequential tf_keras model, pruning wrappers stripped.
        preserve_sparsity: use the pruning-preserving scheme (PQAT) so zeros stay zero while
            training; `None` turns it on when any kernel is at least 20% zeros.
        quantize_configs: a `QuantizeConfig` per layer name or layer class name, for layers the
            default scheme does not know (custom layers), e.g. `{"Square": OutputQuantizeConfig()}`;
            kd_keras's own layers get theirs by default (`LMA`: `LMAQuantizeConfig`).
        calibration_data: batches of model inputs (or `(inputs, targets)` pairs), e.g. the
            training dataset; the activation ranges start from what `calibration_batches` of them
            produce (see `calibrate_quantization_ranges`) instead of TF-MOT's [-6, 6].
        calibration_batches: how many batches of `calibration_data` to read.

    Returns:
        A new functional model whose layers are wrapped (`quant_<name>`).

    Raises:
        TypeError: a subclassed or Keras 3 model.
        ValueError: a model still carrying pruning wrappers, or a layer TF-MOT cannot quantize
            (the message names each such layer and how to fix it).
    """
    check_functional(model, "model to quantize")
    if is_pruned(model):
        raise ValueError(
            "quantize_aware needs a model without pruning wrappers. Call "
            "kd_keras.compress.strip(model) first; pass preserve_sparsity=True to keep its zeros. "
            f"Received: model={model.name!r} with pruning wrappers."
        )
    refusal = qat_refusal(model)
    if refusal is not None:
        raise ValueError(
            f"TF-MOT cannot make {model.name!r} quantization-aware: {refusal}. Export it to int8 "
            "with post-training calibration instead (to_tflite(model, 'int8', "
            "representative_data=...)), or rebuild those ops as Keras layers."
        )
    configs = _with_defaults(model, quantize_configs)
    missing = unsupported_layers(model, configs)
    if missing:
        described = describe_layers(missing)
        raise ValueError(
            f"TF-MOT's 8-bit scheme cannot quantize layer(s) {described}. Pass a QuantizeConfig "
            "for each by layer name or class name, e.g. quantize_configs={"
            f"{type(missing[0]).__name__!r}: kd_keras.compress.OutputQuantizeConfig()}} for an "
            "element-wise layer without weights (a Lambda must first become a custom layer with "
            "get_config; a nested model must be flattened into one functional model). "
            f"Received: layers={[layer.name for layer in missing]}."
        )
    if preserve_sparsity is None:
        report = sparsity_report(model)
        preserve_sparsity = any(v >= 0.2 for k, v in report.items() if k != "total")

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())

    def annotate(layer):
        config = configs.get(layer.name) or configs.get(type(layer).__name__)
        if config is not None:
            return _quantization.quantize_annotate_layer(layer, config)
        return layer

    if configs:
        copy = keras.models.clone_model(copy, clone_function=annotate)
        copy.set_weights(model.get_weights())
    annotated = _quantization.quantize_annotate_model(copy)
    scheme = (
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if preserve_sparsity
        else _quantization.default_8bit.Default8BitQuantizeScheme()
    )
    custom = {type(c).__name__: type(c) for c in configs.values()}
    with _quantization.quantize_scope(custom):
        try:
            qat = _quantization.quantize_apply(annotated, scheme)
        except RuntimeError as error:
            # E.g. a BatchNormalization not preceded by a Conv/Dense it could be folded into.
            raise ValueError(
                f"TF-MOT could not quantize this model: {error} Fold or remove that layer, or "
                "pass quantize_configs={layer_name: QuantizeConfig} for it. "
                f"Received: model={model.name!r}."
            ) from None
    if calibration_data is not None:
        calibrate_quantization_ranges(qat, calibration_data, calibration_batches)
    return qat


class _RangeRecorder:
    """Stands in for an activation quantizer: widens its range variables, passes values through."""

    def __call__(self, inputs, training, weights, **kwargs):
        low, high = weights["min_var"], weights["max_var"]
        axes = list(range(inputs.shape.rank - 1)) if low.shape.rank else None
        values = tf.cast(inputs, tf.float32)
        low.assign(tf.minimum(low, tf.reduce_min(values, axis=axes)))
        high.assign(tf.maximum(high, tf.reduce_max(values, axis=axes)))
        return inputs


def _activation_quantizer_sites(model: keras.Model) -> list[tuple[object, str, object, dict]]:
    """`(owner, attribute, quantizer, range variables)` of every activation/output quantizer."""
    sites = []
    for layer in model.layers:
        if isinstance(layer, quantize_layer.QuantizeLayer) and layer.quantizer:
            sites.append((layer, "quantizer", layer.quantizer, layer.quantizer_vars))
        if not isinstance(layer, quantize_wrapper.QuantizeWrapper):
            continue
        if layer._output_quantizers:
            quantizer = layer._output_quantizers[0]
            sites.append((layer._output_quantizers, 0, quantizer, layer._output_quantizer_vars))
        for activation in layer._quantize_activations:
            for attribute in ("_pre_activation_vars", "_post_activation_vars"):
                if hasattr(activation, attribute):
                    variables = getattr(activation, attribute)
                    sites.append((activation, "quantizer", activation.quantizer, variables))
    return sites


def calibrate_quantization_ranges(qat_model: keras.Model, data: Iterable, batches: int = 8) -> int:
    """Sets every activation and weight range of a quantization-aware model from `data`.

    Weight ranges are taken from the weights, as a training step would. For activations, the
    model runs in inference mode with their fake quantization switched off, and
    records each quantized tensor's range over the batches:

        min_var = min(0, min over batches of the tensor),  max_var = max(0, max over batches)

    (the same min/max a post-training calibration uses). Weights are untouched; a later QAT run
    keeps refining the ranges with TF-MOT's moving average.

    Args:
        qat_model: a model from `quantize_aware` (or a Distiller's QAT student).
        data: batches of inputs, or `(inputs, targets[, weights])` tuples.
        batches: how many batches to read.

    Returns:
        The number of ranges set.

    Raises:
        ValueError: `qat_model` has no quantization wrappers, or `data` yields no batch.
    """
    model = getattr(qat_model, "student", qat_model)
    sites = _activation_quantizer_sites(model)
    if not sites:
        raise ValueError(
            "calibrate_quantization_ranges needs a model from quantize_aware. Received: "
            f"model={model.name!r} without quantization wrappers."
        )
    unique = {id(variables["min_var"]): variables for *_, variables in sites}
    for variables in unique.values():
        variables["min_var"].assign(tf.zeros_like(variables["min_var"]))
        variables["max_var"].assign(tf.zeros_like(variables["max_var"]))
    recorder = _RangeRecorder()
    for owner, attribute, _, _ in sites:
        _set(owner, attribute, recorder)
    for layer in model.layers:
        # Weight ranges follow the weights at each training step; set them now for inference.
        for weight, quantizer, variables in getattr(layer, "_weight_vars", ()):
            quantizer(weight, True, weights=variables)
    seen = 0
    try:
        for batch in data:
            if seen >= batches:
                break
            inputs = batch[0] if isinstance(batch, tuple | list) else batch
            model(inputs, training=False)
            seen += 1
    finally:
        for owner, attribute, quantizer, _ in sites:
            _set(owner, attribute, quantizer)
    if seen == 0:
        raise ValueError("calibrate_quantization_ranges got no batch. Pass a non-empty dataset.")
    return len(unique)


def _set(owner, attribute, value) -> None:
    if isinstance(owner, list):
        owner[attribute] = value
    else:
        setattr(owner, attribute, value)


def is_quantize_aware(model: keras.Model) -> bool:
    """Whether `model` (or a Distiller's student) holds TF-MOT quantization wrappers."""
    root = getattr(model, "student", model)
    return any(
        isinstance(layer, quantize_wrapper.QuantizeWrapper | quantize_layer.QuantizeLayer)
        for layer in root.layers
    )


def quantize_scope(*custom: Mapping[str, type]):
    """Context in which a saved quantization-aware `.keras` model can be loaded.

    Example:
        >>> with quantize_scope():
        ...     model = keras.models.load_model("student_qat.keras")
    """
    return _quantization.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig}, *custom)


def quantized_kernels(model: keras.Model) -> dict[str, tf.Tensor]:
    """The float kernels inside each quantization wrapper, keyed by the wrapped layer's name."""
    kernels = {}
    for layer in getattr(model, "student", model).layers:
        if isinstance(layer, quantize_wrapper.QuantizeWrapper):
            # The wrapped layer's `kernel` attribute is swapped for its fake-quantized tensor;
            # the float variable stays among the wrapper's trainable weights.
            for weight in layer.trainable_weights:
                if weight.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel"):
                    kernels[layer.layer.name] = weight
    return kernels


def kernel_sparsity(model: keras.Model) -> float:
    """Fraction of zeros over the Conv/Dense kernels of a plain or quantization-aware model."""
    kernels = quantized_kernels(model)
    if not kernels:
        return sparsity_report(model)["total"]
    values = np.concatenate([kernel.numpy().reshape(-1) for kernel in kernels.values()])
    return float(np.mean(values == 0))
