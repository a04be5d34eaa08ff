"""Dominant-kernel low-rank convolutions: each k×k Conv2D becomes a k×1 conv then a 1×k conv.

Tai et al., "Convolutional neural networks with low-rank regularization" (ICLR 2016), the
scheme DK2PNet builds on: a k×k kernel with `Cin` inputs and `Cout` outputs is replaced by a
vertical k×1 conv to `R` channels and a horizontal 1×k conv to `Cout`, whose product is the best
rank-R approximation of the kernel (computed exactly from an SVD, so no training is needed to
start from it). The pair costs `R·k·(Cin + Cout)` weights instead of `k²·Cin·Cout`. Fine-tune
the decomposed student with its teacher to recover what the truncation lost:

    small = decompose(student, rank=0.5)      # R = Cout / 2 in every 3×3 conv
    lowrank_report(student, small)["ratio"]   # parameters kept
    kd = Distiller(teacher, small, LogitsDistillation(temperature=4.0), 0.9, 0.1)

The result is a plain functional tf_keras model: it saves as `.keras`, and `prune`,
`quantize_aware` and `kd_keras.export.to_tflite` take it like any other student.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_keras.compress.prune import check_exclude, is_pruned
from kd_keras.compress.quantize import is_quantize_aware
from kd_keras.models import graph
from kd_keras.models.graph import check_functional

VERTICAL_SUFFIX, HORIZONTAL_SUFFIX = "_v", "_h"


def decompose(
    model: keras.Model,
    rank: float | int,
    *,
    exclude: Sequence[str] = (),
    min_kernel: int = 3,
    only_if_smaller: bool = True,
    name: str | None = None,
) -> keras.Model:
    """A copy of `model` whose k×k Conv2D layers are rank-R vertical/horizontal conv pairs.

    For a kernel `W` of shape `[kh, kw, Cin, Cout]` (`i` the row offset, `j` the column offset):

    Formula:
        M[(i, c), (j, n)] = W[i, j, c, n]                  # shape [kh·Cin, kw·Cout]
        M ≈ U_R Σ_R V_Rᵀ                                   # SVD truncated to rank R
        Kv[i, 0, c, r] = U[(i, c), r] · √σ_r               # shape [kh, 1, Cin, R]
        Kh[0, j, r, n] = √σ_r · Vᵀ[r, (j, n)]              # shape [1, kw, R, Cout]
        conv(conv(x, Kv), Kh) = conv(x, W_R),   W_R[i, j, c, n] = Σ_r Kv[i, 0, c, r] Kh[0, j, r, n]

    `W_R` is the best rank-R approximation of `W` in this unfolding (Eckart–Young), and with
    `R = min(kh·Cin, kw·Cout)` it is `W` itself. Strides `(sh, sw)` become `(sh, 1)` on the
    vertical and `(1, sw)` on the horizontal conv, and dilations `(dh, dw)` likewise; `"same"`
    and `"valid"` padding carry over exactly (each conv pads only its own axis, and the
    vertical conv, which has no bias, maps zero padding to zeros). The bias, activation and
    activity regularizer go on the horizontal conv; a kernel regularizer or constraint applies
    to each factor.

    A Conv2D (exactly that class; Depthwise/Separable/Transpose convs are kept) is replaced by
    layers `<name>_v` and `<name>_h` when both kernel sides are >= `min_kernel`, its name is not
    in `exclude`, and (with `only_if_smaller`) the pair has fewer weights:
    `R·(kh·Cin + kw·Cout) < kh·kw·Cin·Cout`, for square kernels `R·k·(Cin + Cout) < k²·Cin·Cout`.
    Every other layer keeps its name, config and weights, so lookups by name (`features`,
    `logits`, `neck`, `heatmap`, `embedding`) still work.

    Args:
        model: a functional tf_keras model without pruning or quantization wrappers.
        rank: a float in (0, 1]: a fraction of each layer's output channels,
            `R = max(1, round(rank·Cout))`; or an int >= 1: `R` itself. Either way `R` is capped
            at the full rank `min(kh·Cin, kw·Cout)`. Note `rank=1` means R = 1, `rank=1.0`
            means R = Cout.
        exclude: names of Conv2D layers to keep whole, e.g. a first conv with 3 input channels.
        min_kernel: smallest kernel side that is decomposed (>= 1; 1 also factors 1×1 convs).
        only_if_smaller: keep a conv whole when its pair would not have fewer weights. `False`
            decomposes every eligible conv, e.g. to check that full rank is exact.
        name: name of the new model; defaults to `"<model.name>_lowrank"`.

    Returns:
        A new functional model with the same inputs and outputs structure, sharing no layers or
        weights with `model` (which is left untouched).

    Raises:
        TypeError: a subclassed or Keras 3 model.
        ValueError: a bad `rank`, `min_kernel` or `exclude`; a model with pruning/QAT wrappers;
            a layer called more than once or a nested model; a conv to decompose with
            `groups > 1` or `channels_first` (exclude it), or whose `_v`/`_h` names are taken.

    Example:
        >>> model = build_cnn_classifier((16, 16, 3), 4, 0.25)
        >>> small = decompose(model, 0.5)   # stage*_conv -> stage*_conv_v, stage*_conv_h
    """
    check_functional(model, "model to factor")
    _check_rank(rank)
    if isinstance(min_kernel, bool) or not isinstance(min_kernel, numbers.Integral):
        raise ValueError(f"Expected min_kernel to be an int >= 1. Received: {min_kernel=}.")
    if min_kernel < 1:
        raise ValueError(f"Expected min_kernel to be an int >= 1. Received: {min_kernel=}.")
    if isinstance(exclude, str):
        raise ValueError(
            f"Expected exclude to be a sequence of layer names. Received: exclude={exclude!r}."
        )
    if is_pruned(model) or is_quantize_aware(model):
        raise ValueError(
            "decompose needs a model without TF-MOT wrappers: decompose first, then prune or "
            "quantize_aware the result (or kd_keras.compress.strip a pruned model). "
            f"Received: model={model.name!r} with pruning or quantization wrappers."
        )
    check_exclude(model, exclude)
    names = [layer.name for layer in model.layers]

    # === Functional Model ===
    # KerasTensors of `model` (by id) -> tensors of the new graph.
    mapping: dict[int, object] = {}
    for tensor in model.inputs:
        input_layer = graph.source_layer(tensor)
        if not isinstance(input_layer, keras.layers.InputLayer):
            raise ValueError(
                "decompose needs a model whose inputs are keras.Input tensors; input "
                f"{tensor.name!r} comes from layer {input_layer.name!r}. "
                f"Received: model={model.name!r}."
            )
        config = input_layer.get_config()
        mapping[id(tensor)] = keras.Input(
            batch_shape=config["batch_input_shape"],
            dtype=config["dtype"],
            sparse=config.get("sparse", False),
            ragged=config.get("ragged", False),
            name=config["name"],
        )
    assignments = []  # (new layer, weights to set once it is built)
    for layer in model.layers:  # topological order for a functional model
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            raise ValueError(
                f"decompose needs one flat functional model; layer {layer.name!r} is a nested "
                f"model. Rebuild it with the sub-model's layers called on tensors. "
                f"Received: layer={layer.name!r} ({type(layer).__name__})."
            )
        nodes = graph.calls_in(model, layer)
        if len(nodes) != 1:
            raise ValueError(
                f"decompose rebuilds each layer once; layer {layer.name!r} is called "
                f"{len(nodes)} times in model {model.name!r} (a shared layer). Give each call "
                f"its own layer. Received: layer={layer.name!r}."
            )
        node = nodes[0]
        args, kwargs = tf.nest.map_structure(
            lambda value: mapping.get(id(value), value), (node.call_args, node.call_kwargs)
        )
        layer_rank = None
        if _eligible(layer, exclude, min_kernel):
            layer_rank = _layer_rank(layer, rank, only_if_smaller)
        if layer_rank is None:
            clone = type(layer).from_config(layer.get_config())
            outputs = clone(*args, **kwargs)
            assignments.append((clone, layer.get_weights()))
        else:
            vertical, horizontal = _conv_pair(layer, layer_rank, names)
            outputs = horizontal(vertical(*args, **kwargs))
            kv, kh = _factors(layer.kernel.numpy(), layer_rank)
            assignments.append((vertical, [kv]))
            bias = [layer.bias.numpy()] if layer.use_bias else []
            assignments.append((horizontal, [kh, *bias]))
        for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
            mapping[id(old)] = new

    inputs = tf.nest.map_structure(lambda t: mapping[id(t)], model._nested_inputs)
    outputs = tf.nest.map_structure(lambda t: mapping[id(t)], model._nested_outputs)
    result = keras.Model(inputs, outputs, name=name or f"{model.name}_lowrank")
    for layer, weights in assignments:
        layer.set_weights(weights)
    return result


def lowrank_report(original: keras.Model, decomposed: keras.Model) -> dict:
    """Rank, parameters and kernel error of each decomposed conv, and the totals.

    Formula:
        kernel_error = ‖W − W_R‖_F / ‖W‖_F,   W_R[i, j, c, n] = Σ_r Kv[i, 0, c, r] Kh[0, j, r, n]

    `W_R` is computed from the current factors of `decomposed`, so right after `decompose` this
    is the SVD truncation error `√(Σ_{r>R} σ_r²) / √(Σ_r σ_r²)`, and after fine-tuning it measures
    how far the factors moved from the original kernel.

    Args:
        original: the model given to `decompose`.
        decomposed: its result (plain layers, before any pruning or QAT wrapping).

    Returns:
        `{"layers": {name: {"rank", "full_rank", "params_before", "params_after",
        "kernel_error"}}, "params_before", "params_after", "ratio"}`, where the totals count
        every parameter of each model and `ratio = params_after / params_before`.
    """
    decomposed_names = {layer.name for layer in decomposed.layers}
    layers = {}
    for layer in original.layers:
        vertical_name = f"{layer.name}{VERTICAL_SUFFIX}"
        horizontal_name = f"{layer.name}{HORIZONTAL_SUFFIX}"
        if not (
            type(layer) is keras.layers.Conv2D
            and layer.name not in decomposed_names
            and {vertical_name, horizontal_name} <= decomposed_names
        ):
            continue
        vertical = decomposed.get_layer(vertical_name)
        horizontal = decomposed.get_layer(horizontal_name)
        kernel = layer.kernel.numpy().astype(np.float64)
        kv = vertical.kernel.numpy().astype(np.float64)[:, 0]  # [kh, Cin, R]
        kh = horizontal.kernel.numpy().astype(np.float64)[0]  # [kw, R, Cout]
        approximation = np.einsum("icr,jrn->ijcn", kv, kh)
        norm = np.linalg.norm(kernel)
        kernel_rows, kernel_cols, channels_in, channels_out = kernel.shape
        layers[layer.name] = {
            "rank": int(kv.shape[-1]),
            "full_rank": min(kernel_rows * channels_in, kernel_cols * channels_out),
            "params_before": int(layer.count_params()),
            "params_after": int(vertical.count_params() + horizontal.count_params()),
            "kernel_error": float(np.linalg.norm(kernel - approximation) / norm) if norm else 0.0,
        }
    before, after = int(original.count_params()), int(decomposed.count_params())
    return {
        "layers": layers,
        "params_before": before,
        "params_after": after,
        "ratio": after / before if before else 1.0,
    }


def _check_rank(rank) -> None:
    message = (
        "Expected rank to be a float in (0, 1] (a fraction of each layer's output channels) or "
        f"an int >= 1 (the rank itself). Received: rank={rank!r}."
    )
    if isinstance(rank, bool) or not isinstance(rank, numbers.Real):
        raise ValueError(message)
    if isinstance(rank, numbers.Integral):
        if rank < 1:
            raise ValueError(message)
    elif not 0 < rank <= 1:
        raise ValueError(message)


def _eligible(layer, exclude: Sequence[str], min_kernel: int) -> bool:
    """A plain Conv2D, not excluded, with both kernel sides >= `min_kernel`."""
    return (
        type(layer) is keras.layers.Conv2D
        and layer.name not in exclude
        and min(layer.kernel_size) >= min_kernel
    )


def _layer_rank(layer, rank: float | int, only_if_smaller: bool) -> int | None:
    """The rank R for `layer`, or `None` when it stays whole (no parameter saving)."""
    if layer.groups != 1:
        raise ValueError(
            f"decompose cannot split grouped convolutions; layer {layer.name!r} has "
            f"groups={layer.groups}. Pass exclude=[{layer.name!r}] to keep it whole. "
            f"Received: layer={layer.name!r}."
        )
    if layer.data_format != "channels_last":
        raise ValueError(
            f"decompose supports channels_last convolutions only; layer {layer.name!r} is "
            f"{layer.data_format}. Pass exclude=[{layer.name!r}] to keep it whole. "
            f"Received: layer={layer.name!r}."
        )
    kernel_rows, kernel_cols, channels_in, channels_out = layer.kernel.shape
    full = min(kernel_rows * channels_in, kernel_cols * channels_out)
    fraction = not isinstance(rank, numbers.Integral)
    target = min(max(1, round(rank * channels_out)) if fraction else int(rank), full)
    pair = target * (kernel_rows * channels_in + kernel_cols * channels_out)
    if only_if_smaller and pair >= kernel_rows * kernel_cols * channels_in * channels_out:
        return None
    return target


def _conv_pair(layer, rank: int, taken: Sequence[str]):
    """The vertical `<name>_v` (no bias, linear) and horizontal `<name>_h` convs for `layer`."""
    vertical_name = f"{layer.name}{VERTICAL_SUFFIX}"
    horizontal_name = f"{layer.name}{HORIZONTAL_SUFFIX}"
    clash = sorted({vertical_name, horizontal_name} & set(taken))
    if clash:
        raise ValueError(
            f"Cannot decompose layer {layer.name!r}: the model already has layer(s) {clash}. "
            f"Rename them or pass exclude=[{layer.name!r}]. Received: layer={layer.name!r}."
        )
    config = layer.get_config()
    (kernel_rows, kernel_cols), (stride_rows, stride_cols) = layer.kernel_size, layer.strides
    dilation_rows, dilation_cols = layer.dilation_rate
    vertical = keras.layers.Conv2D.from_config(
        {
            **config,
            "name": vertical_name,
            "filters": rank,
            "kernel_size": (kernel_rows, 1),
            "strides": (stride_rows, 1),
            "dilation_rate": (dilation_rows, 1),
            "activation": "linear",
            "use_bias": False,
            "activity_regularizer": None,
        }
    )
    horizontal = keras.layers.Conv2D.from_config(
        {
            **config,
            "name": horizontal_name,
            "kernel_size": (1, kernel_cols),
            "strides": (1, stride_cols),
            "dilation_rate": (1, dilation_cols),
        }
    )
    return vertical, horizontal


def _factors(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """`(Kv, Kh)` of shapes `[kh, 1, Cin, R]` and `[1, kw, R, Cout]` (see `decompose`)."""
    kernel_rows, kernel_cols, channels_in, channels_out = kernel.shape
    matrix = kernel.astype(np.float64).transpose(0, 2, 1, 3)
    matrix = matrix.reshape(kernel_rows * channels_in, kernel_cols * channels_out)
    u, sigma, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(sigma[:rank])
    vertical = (u[:, :rank] * root).reshape(kernel_rows, channels_in, rank)[:, None]
    horizontal = (root[:, None] * vt[:rank]).reshape(rank, kernel_cols, channels_out)
    horizontal = horizontal.transpose(1, 0, 2)[None]
    return vertical.astype(kernel.dtype), horizontal.astype(kernel.dtype)
