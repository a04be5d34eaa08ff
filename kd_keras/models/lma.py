"""LMA, a learnable multi-piece (piecewise-linear) activation, and its TF-MOT quantize config.

x = keras.layers.Conv2D(16, 3)(x)
x = LMA(pieces=4)(x)                      # starts as ReLU, learns its slopes per channel
qat = kd_keras.compress.quantize_aware(model)   # picks LMAQuantizeConfig for every LMA
kd_keras.export.to_tflite(qat, "int8")          # SUB/RELU/MUL/ADD builtins, all int8
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

_quantization = tfmot.quantization.keras
_PACKAGE = "kd_keras"
INITS = ("relu", "identity")


def breakpoints(pieces: int, bound: float) -> tuple[float, ...]:
    """The `pieces - 1` fixed breakpoints of an `LMA`: always 0, the rest spread over ±`bound`.

    Besides 0, `⌊(pieces - 2) / 2⌋` points are evenly spaced in `[-bound, 0)` and
    `⌈(pieces - 2) / 2⌉` in `(0, bound]`, e.g. `pieces=4, bound=3` gives `(-3, 0, 3)` and
    `pieces=5` gives `(-3, 0, 1.5, 3)`. The breakpoint at 0 is what lets an LMA be ReLU exactly.
    """
    negative = (pieces - 2) // 2
    positive = pieces - 2 - negative
    below = [-bound * i / negative for i in range(negative, 0, -1)]
    above = [bound * i / positive for i in range(1, positive + 1)]
    return (*below, 0.0, *above)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LMA(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """Learnable multi-piece activation: a per-channel piecewise-linear function of K pieces.

    Formula:
        f(x)_c = a_c · x_c + Σ_{k=1}^{K-1} s_{k,c} · relu(x_c − b_k)

    with fixed breakpoints `b_1 < … < b_{K-1}` (see `breakpoints`: 0 and points spread over
    `[-bound, bound]`) shared by all channels, and learnable per-channel slopes: `a` (`base_slope`,
    the slope left of `b_1`) and `s_k` (`hinge_slopes`, the change of slope at `b_k`). On the
    piece between `b_j` and `b_{j+1}` the slope is `a + s_1 + … + s_j`; the function is
    continuous. Outside `±bound` it keeps the slope of its outermost piece.

    `init="relu"` starts with `a = 0` and a slope change of 1 at `b = 0` (ReLU exactly);
    `init="identity"` starts with `a = 1` and no slope change.

    The layer uses only SUB, RELU, MUL and ADD, so with `LMAQuantizeConfig` (which
    `kd_keras.compress.quantize_aware` applies by itself) every one of those tensors gets an
    8-bit range during QAT and the TFLite int8 model runs LMA in integer kernels.

    Under `kd_keras.compress.prune` the layer is wrapped but keeps all its slopes (they are few
    and each shapes a whole channel).

    This is a sum-of-hinges parametrisation of the learnable piecewise-linear activations used
    for compact students; the breakpoints are fixed, only the slopes are learned.

    Args:
        pieces: number of linear pieces K (>= 2); `pieces=2` is a PReLU with learnable slopes on
            both sides of 0.
        bound: the outer breakpoints sit at `±bound` (> 0; the positive one only when
            `pieces >= 3`, the negative one when `pieces >= 4`).
        init: `"relu"` or `"identity"`.
        **kwargs: standard layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        Any rank >= 1 with a known last (channel) dimension. Output has the same shape.

    Raises:
        ValueError: `pieces < 2`, `bound <= 0` or not finite, or an unknown `init`.

    Example:
        >>> layer = LMA(pieces=4, init="relu")
        >>> layer(tf.constant([[-2.0, 0.5]])).numpy()
        array([[0. , 0.5]], dtype=float32)
    """

    def __init__(self, pieces: int = 4, bound: float = 3.0, init: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if isinstance(pieces, bool) or not isinstance(pieces, int):
            raise ValueError(f"Expected pieces to be an int >= 2. Received: pieces={pieces!r}.")
        if pieces < 2:
            raise ValueError(f"Expected pieces >= 2. Received: pieces={pieces}.")
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ValueError(f"Expected bound to be a number > 0. Received: bound={bound!r}.")
        if not math.isfinite(bound) or bound <= 0:
            raise ValueError(f"Expected a finite bound > 0. Received: bound={bound}.")
        if init not in INITS:
            raise ValueError(f"Expected init in {INITS}. Received: init={init!r}.")
        self.pieces = pieces
        self.bound = float(bound)
        self.init = init
        self.breakpoints = breakpoints(pieces, self.bound)
        # Fake-quantizers of the intermediate tensors, set by LMAQuantizeConfig inside a TF-MOT
        # QuantizeWrapper; empty for the float layer.
        self._quantize_taps: dict = {}

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"LMA needs a known channel (last) dimension. Received: input_shape={input_shape}."
            )
        relu = self.init == "relu"
        hinges = [[1.0 if relu and b == 0.0 else 0.0] * channels for b in self.breakpoints]
        self.base_slope = self.add_weight(
            name="base_slope",
            shape=(channels,),
            initializer=keras.initializers.Constant(0.0 if relu else 1.0),
        )
        self.hinge_slopes = self.add_weight(
            name="hinge_slopes",
            shape=(len(self.breakpoints), channels),
            initializer=keras.initializers.Constant(hinges),
        )
        super().build(input_shape)

    def call(self, inputs):
        y = self._tap("base", self.base_slope * inputs)
        last = len(self.breakpoints) - 1
        for k, b in enumerate(self.breakpoints):
            # No SUB for the breakpoint at 0: the converter would drop it anyway.
            hinge = tf.nn.relu(inputs if b == 0.0 else inputs - b)
            hinge = self._tap(f"hinge{k}", hinge)
            y = y + self._tap(f"term{k}", self.hinge_slopes[k] * hinge)
            if k < last:
                # The last sum is the layer's output, quantized by the wrapper's output quantizer.
                y = self._tap(f"sum{k}", y)
        return y

    def _tap(self, name, tensor):
        tap = self._quantize_taps.get(name)
        return tensor if tap is None else tap(tensor)

    def quantized_tensor_names(self) -> list[str]:
        """Names of the intermediate tensors `LMAQuantizeConfig` gives an 8-bit range."""
        count = len(self.breakpoints)
        sums = [f"sum{k}" for k in range(count - 1)]
        return ["base", *(f"{kind}{k}" for k in range(count) for kind in ("hinge", "term")), *sums]

    def get_prunable_weights(self):
        return []

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"pieces": self.pieces, "bound": self.bound, "init": self.init})
        return config


class _TensorQuantizer(_quantization.quantizers.MovingAverageQuantizer):
    """A per-tensor 8-bit moving-average quantizer whose range variables carry its own name.

    TF-MOT builds every activation quantizer's variables as `post_activation_{min,max}`; LMA
    has several quantized tensors in one layer, so each needs distinct variable names.
    """

    def __init__(self, tensor_name: str, num_bits: int = 8):
        super().__init__(num_bits=num_bits, per_axis=False, symmetric=False, narrow_range=False)
        self.tensor_name = tensor_name

    def build(self, tensor_shape, name, layer):
        return self._add_range_weights(layer, self.tensor_name)

    def get_config(self):
        return {"tensor_name": self.tensor_name, "num_bits": self.num_bits}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LMAQuantizeConfig(_quantization.QuantizeConfig):
    """Quantizes an `LMA`'s output and every intermediate tensor (8 bits, moving-average range).

    A config that quantized only the output (like `kd_keras.compress.OutputQuantizeConfig`)
    would leave the SUB/RELU/MUL/ADD inside the layer without ranges, so the converter would
    run them in float between a DEQUANTIZE and a QUANTIZE. The slopes are not fake-quantized
    during QAT; the converter quantizes them (per tensor) as MUL constants.

    Args:
        num_bits: bits of every range.

    Example:
        >>> qat = kd_keras.compress.quantize_aware(model)  # applied to each LMA by default
    """

    def __init__(self, num_bits: int = 8):
        self.num_bits = num_bits

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        # Each intermediate tensor passes through a `linear` activation that TF-MOT wraps in a
        # QuantizeAwareActivation, i.e. a fake-quant after it.
        return [
            (keras.activations.linear, _TensorQuantizer(name, self.num_bits))
            for name in layer.quantized_tensor_names()
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        layer._quantize_taps = dict(zip(layer.quantized_tensor_names(), quantize_activations))

    def get_output_quantizers(self, layer):
        return [_TensorQuantizer("output", self.num_bits)]

    def get_config(self):
        return {"num_bits": self.num_bits}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
