"""TFLite conversion and checks in LiteRT, the runtime robots use.

    to_tflite(model, mode="int8", path="student.tflite")   # + student.io.json (I/O quant params)
    evaluate_tflite("student.tflite", x, y)                # accuracy in LiteRT
    parity_report(model, "student.tflite", x)               # Keras vs LiteRT agreement
    tflite_size("student.tflite"), tflite_latency("student.tflite")

Modes: `float32`; `float16` (weights stored as float16); `dynamic` (int8 weights, float
activations); `int8` (full integer: weights and activations int8, ranges from QAT or from a
representative dataset; I/O float by default, int8 with `int8_io=True`; camera-native uint8
pixels in with `pixel_input=(mean, std)`).
"""

from __future__ import annotations

import gzip
import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kd_keras.io import atomic_write_bytes, atomic_write_json
from kd_runtime.model import TFLiteModel as LiteRTModel

Mode = Literal["float32", "float16", "dynamic", "int8"]
MODES = ("float32", "float16", "dynamic", "int8")
TFLiteModel = bytes | str | os.PathLike


def representative_dataset(x: np.ndarray, count: int = 100, seed: int = 0):
    """A converter calibration generator over up to `count` examples of `x`, one at a time.

    Pass examples that went through the same preprocessing as training (not augmented), so the
    int8 ranges match what the model sees.
    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("A representative dataset needs at least one example. Received: 0.")
    order = np.random.default_rng(seed).permutation(len(x))[:count]

    def generate():
        for index in order:
            yield [x[index : index + 1]]

    return generate


def to_tflite(
    model: keras.Model,
    mode: Mode = "float32",
    *,
    representative_data: np.ndarray | Iterable | None = None,
    int8_io: bool = False,
    pixel_input: tuple[float, float] | None = None,
    path: str | os.PathLike | None = None,
) -> bytes:
    """Converts a functional tf_keras model (plain, pruned-and-stripped or QAT) to TFLite.

    Args:
        model: the model to convert (batch dimension left free).
        mode: `"float32"`, `"float16"`, `"dynamic"` or `"int8"`.
        representative_data: for `int8` of a model without QAT: an array of preprocessed inputs
            (up to 100 are drawn) or a generator function as the converter expects.
        int8_io: `int8` only: int8 input/output tensors instead of float ones.
        pixel_input: `int8` only: `(mean, std)` of the model's input normalisation
            `x = (pixel − mean) / std`; the file then takes uint8 pixels as they are (camera-
            native input: its input tensor is uint8 with scale `1 / std` and zero point `mean`,
            requantized to the model's own int8 input range by its first op), so the robot does
            no float preprocessing. `mean` must be an integer in 0..255.
        path: when given, the flatbuffer is written there and the inputs' and outputs' dtype,
            shape and quantization (scale, zero point) to `<path stem>.io.json` beside it.

    Returns:
        The `.tflite` flatbuffer.

    Raises:
        TypeError: a subclassed or Keras 3 model.
        ValueError: an unknown mode, `int8_io` or `pixel_input` outside `int8`, a `pixel_input`
            that uint8 cannot hold, or `int8` for a model without QAT and without
            `representative_data`.
    """
    from kd_keras.compress.prune import is_pruned
    from kd_keras.compress.quantize import is_quantize_aware
    from kd_keras.models.graph import check_functional

    check_functional(model, "model to convert")
    if mode not in MODES:
        raise ValueError(f"Expected mode in {MODES}. Received: mode={mode!r}.")
    if int8_io and mode != "int8":
        raise ValueError(
            f"int8 inputs/outputs need mode='int8'. Received: mode={mode!r}, int8_io=True."
        )
    if pixel_input is not None:
        check_pixel_input(pixel_input, mode)
    if is_pruned(model):
        raise ValueError(
            "Strip the pruning wrappers before export: kd_keras.compress.strip(model). "
            f"Received: model={model.name!r} with pruning wrappers."
        )
    quantize_aware = is_quantize_aware(model)
    if mode == "int8" and representative_data is None and not quantize_aware:
        raise ValueError(
            "Full-integer int8 export of a model trained without QAT needs a representative "
            "dataset to calibrate activation ranges: pass representative_data=x_train[:100] "
            "(preprocessed like the training data), or train with "
            "kd_keras.compress.quantize_aware first. Received: representative_data=None."
        )
    if mode in ("float16", "dynamic") and quantize_aware:
        raise ValueError(
            f"A quantization-aware model exports as mode='int8'; mode={mode!r} applies to float "
            "models. Received: a QAT model."
        )

    with tempfile.TemporaryDirectory(prefix="kd_keras_export_") as saved_model:
        _save_inference_function(model, saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        flatbuffer = _convert(converter, mode, representative_data, int8_io, pixel_input)
    if pixel_input is not None:
        mean, std = pixel_input
        flatbuffer = with_input_quantization(flatbuffer, 1.0 / std, int(mean))
    if path is not None:
        path = Path(path)
        atomic_write_bytes(path, flatbuffer)
        atomic_write_json(io_json_path(path), {"mode": mode, **io_details(flatbuffer)})
    return flatbuffer


def _convert(converter, mode: Mode, representative_data, int8_io: bool, pixel_input) -> bytes:
    """Sets the converter up for `mode` (see `to_tflite`) and converts."""
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if representative_data is not None:
            converter.representative_dataset = (
                representative_data
                if callable(representative_data)
                else representative_dataset(representative_data)
            )
            # Only int8 kernels: conversion fails rather than leave a float op behind. (QAT
            # models are integer already; the converter refuses this flag without calibration.)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if pixel_input is not None:
            converter.inference_input_type = tf.uint8
    return converter.convert()


def _save_inference_function(model: keras.Model, directory: str) -> None:
    """Saves `model(x, training=False)` alone as a SavedModel for the converter.

    `TFLiteConverter.from_keras_model` saves the whole Keras object graph first, tracing every
    layer's call on the way; that is about two thirds of a small model's conversion time. The
    inference function and the variables it reads give the converter the same graph and the
    same signature (`serving_default`: the model's input name in, its output names out).
    """
    specs = [
        tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(model.inputs, model.input_names)
    ]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(model.output_names, outputs))

    module = tf.Module()
    module.variables_read = list(model.variables)
    module.serve = serve
    # The function itself, not its concrete function: models built under a strategy hold
    # distributed variables, which only a function with an input signature can save.
    tf.saved_model.save(module, directory, signatures=serve)


def check_pixel_input(pixel_input: tuple[float, float], mode: str = "int8") -> None:
    """Raises `ValueError` unless `(mean, std)` can describe uint8 pixels of an int8 file."""
    mean, std = pixel_input
    if mode != "int8":
        raise ValueError(
            f"Camera-native uint8 input needs mode='int8'. Received: mode={mode!r}, "
            f"pixel_input={pixel_input}."
        )
    if not (float(mean).is_integer() and 0 <= mean <= 255 and std > 0):
        raise ValueError(
            "Camera-native uint8 input needs an integer mean in 0..255 and a positive std "
            f"(the input's zero point and 1 / scale). Received: pixel_input={pixel_input}."
        )


def with_input_quantization(flatbuffer: bytes, scale: float, zero_point: int) -> bytes:
    """The `.tflite` with its one integer input tensor's quantization set to `(scale,
    zero_point)`.

    Only valid where every op reading the input is a QUANTIZE op (the converter's requantize
    from the input type to the model's int8 range): that op then maps the new input range to
    the same internal int8 values, so the model computes what it did, from new input units.
    """
    from kd_keras.compat import flatbuffer_utils, tflite_schema

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    (index,) = graph.inputs
    readers = [op for op in graph.operators if index in op.inputs]
    codes = {model.operatorCodes[op.opcodeIndex].builtinCode for op in readers}
    if codes != {tflite_schema.BuiltinOperator.QUANTIZE}:
        raise ValueError(
            "Expected the converted model's input to feed only QUANTIZE ops, so that its "
            f"quantization can change. Received: ops {sorted(codes)} read it."
        )
    quantization = graph.tensors[index].quantization
    quantization.scale, quantization.zeroPoint = [float(scale)], [int(zero_point)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def io_json_path(path: str | os.PathLike) -> Path:
    """`student.tflite` -> `student.io.json`, where `to_tflite` records the I/O details."""
    path = Path(path)
    return path.with_name(f"{path.stem}.io.json")


def io_details(model: TFLiteModel) -> dict:
    """Name, shape, dtype and quantization (scale, zero point) of every input and output."""
    interpreter = _interpreter(model)

    def describe(details):
        scale, zero_point = details["quantization"]
        return {
            "name": details["name"],
            "shape": [int(d) for d in details["shape"]],
            "dtype": np.dtype(details["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }

    return {
        "inputs": [describe(d) for d in interpreter.get_input_details()],
        "outputs": [describe(d) for d in interpreter.get_output_details()],
    }


def tflite_predict(model: TFLiteModel, x: np.ndarray) -> np.ndarray:
    """Runs a single-output `.tflite` in LiteRT (`kd_runtime.TFLiteModel`); float outputs.

    Inputs are quantized and outputs dequantized with the tensors' own parameters when the model
    has integer I/O, so the result compares directly with the Keras model's.
    """
    runner = LiteRTModel(_content(model))
    if len(runner.output_names) != 1:
        raise ValueError(
            f"Expected a .tflite with one output. Received: outputs={runner.output_names}."
        )
    (output,) = runner(np.asarray(x, dtype=np.float32)).values()
    return output


def evaluate_tflite(model: TFLiteModel, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a classifier `.tflite` (file or bytes) on `(x, y)`, run in LiteRT."""
    predictions = np.argmax(tflite_predict(model, x), axis=-1)
    return float(np.mean(predictions == np.asarray(y)))


def parity_report(keras_model: keras.Model, model: TFLiteModel, x: np.ndarray) -> dict:
    """How closely the LiteRT model reproduces the Keras model on `x`.

    Returns:
        `top1_agreement` (fraction of examples with the same arg-max), `max_abs_diff` and
        `mean_abs_diff` of the outputs, and `examples`.
    """
    expected = keras_model.predict(np.asarray(x, np.float32), batch_size=256, verbose=0)
    actual = tflite_predict(model, x)
    difference = np.abs(expected - actual)
    return {
        "top1_agreement": float(np.mean(expected.argmax(-1) == actual.argmax(-1))),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "examples": len(x),
    }


def tflite_size(model: TFLiteModel) -> dict:
    """`{"bytes": raw size, "gzip_bytes": gzip-compressed size}` of a `.tflite`.

    Zeros from pruning do not shrink the flatbuffer but compress well, so pruning shows up in
    the gzip size (what an over-the-air update transfers).
    """
    content = _content(model)
    return {"bytes": len(content), "gzip_bytes": len(gzip.compress(content, compresslevel=9))}


def tflite_latency(
    model: TFLiteModel, runs: int = 200, warmup: int = 20, num_threads: int = 1
) -> float:
    """Median wall-clock milliseconds of one single-example inference in LiteRT.

    The input is a fixed random example (quantized for integer inputs); `num_threads=1` measures
    one core, as on a small robot computer.
    """
    if runs < 1:
        raise ValueError(f"Expected runs >= 1. Received: runs={runs!r}.")
    interpreter = _interpreter(model, num_threads=num_threads)
    details = interpreter.get_input_details()[0]
    shape = [1, *[int(d) for d in details["shape"][1:]]]
    interpreter.resize_tensor_input(details["index"], shape)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    sample = np.random.default_rng(0).random(shape, dtype=np.float32)
    interpreter.set_tensor(details["index"], LiteRTModel(_content(model)).quantize(sample))
    for _ in range(warmup):
        interpreter.invoke()
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000.0


# === LiteRT helpers ===


def _content(model: TFLiteModel) -> bytes:
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"No .tflite file at {path}. Received: model={str(path)!r}.")
    return path.read_bytes()


def _interpreter(model: TFLiteModel, num_threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=_content(model), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter
