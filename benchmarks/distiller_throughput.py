"""Training throughput of the Distiller, side by side in one run.

(a) the plain student `fit` on labels, (b) our Distiller online (teacher forward pass every step),
(c) our Distiller from cached teacher outputs, (d) Keras 3's `keras.distillation.Distiller` with the
same architectures, input pipeline, data and optimizer (in a subprocess: Keras 3 and tf_keras
cannot share one).

    python benchmarks/distiller_throughput.py [--image-size 32] [--epochs 3]

Prints images/s and step times with the ratios (b)/(d) and (c)/(a). Not a test; never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARCHITECTURE = {"teacher": (2.0, 1), "student": (0.25, 1), "base": (32, 64, 128)}


def load_data(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits, upsampled to `image_size` (nearest) so the models do real work."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    repeat = image_size // 8
    x = np.repeat(np.repeat(x, repeat, axis=1), repeat, axis=2)[..., None]
    return x, digits.target.astype(np.int64)


def make_dataset(arrays: tuple, batch_size: int):
    """The same input pipeline for every setup: batched, cached, prefetched `tf.data`."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size).cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def _timed_fit(model, dataset, epochs: int, batch_size: int, examples: int) -> dict:
    """Fits once to warm up (tracing, cache), then times `epochs` epochs."""
    model.fit(dataset, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    steps = epochs * int(np.ceil(examples / batch_size))
    return {"images_per_s": epochs * examples / seconds, "step_ms": 1000 * seconds / steps}


def run_tf_keras(image_size: int, epochs: int, batch_size: int) -> dict:
    import tf_keras as keras

    from kd_keras import Distiller, LogitsDistillation
    from kd_keras.methods import offline
    from kd_keras.models import build_cnn_classifier

    x, y = load_data(image_size)
    shape = x.shape[1:]

    def model(role: str):
        width, depth = ARCHITECTURE[role]
        return build_cnn_classifier(shape, 10, width, depth, ARCHITECTURE["base"], name=role)

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(0)
    teacher = model("teacher")
    results = {}

    student = model("student")
    student.compile(keras.optimizers.Adam(1e-3), loss=ce)
    labelled = make_dataset((x, y), batch_size)
    results["a"] = _timed_fit(student, labelled, epochs, batch_size, len(x))

    distiller = Distiller(teacher, model("student"), LogitsDistillation(4.0), [0.9], 0.1)
    distiller.compile(keras.optimizers.Adam(1e-3), loss=ce)
    results["b"] = _timed_fit(distiller, labelled, epochs, batch_size, len(x))

    cache = offline.compute_teacher_outputs(teacher, x)
    cached = make_dataset((x, y, cache.outputs), batch_size)
    distiller = Distiller(
        None, model("student"), LogitsDistillation(4.0), [0.9], 0.1, teacher_output_shape=(10,)
    )
    distiller.compile(keras.optimizers.Adam(1e-3), loss=ce)
    results["c"] = _timed_fit(distiller, cached, epochs, batch_size, len(x))
    return results


KERAS3_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    os.environ["TF_USE_LEGACY_KERAS"] = "0"
    import numpy as np
    import keras
    sys.path.insert(0, {bench_dir!r})
    from distiller_throughput import load_data, make_dataset, ARCHITECTURE, _timed_fit

    image_size, epochs, batch_size = {image_size}, {epochs}, {batch_size}
    x, y = load_data(image_size)

    def model(role):
        width, depth = ARCHITECTURE[role]
        inputs = keras.Input(x.shape[1:])
        h, size = inputs, x.shape[1]
        for stage, filters in enumerate(ARCHITECTURE["base"]):
            for _ in range(depth):
                h = keras.layers.Conv2D(max(4, round(filters * width)), 3, padding="same",
                                        use_bias=False)(h)
                h = keras.layers.BatchNormalization(momentum=0.9)(h)
                h = keras.layers.ReLU()(h)
            if size >= 2:
                h = keras.layers.MaxPooling2D(2)(h)
                size //= 2
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h), name=role)

    keras.utils.set_random_seed(0)
    teacher = model("teacher")
    distiller = keras.distillation.Distiller(
        teacher, model("student"), keras.distillation.LogitsDistillation(temperature=4.0),
        distillation_loss_weights=[0.9], student_loss_weight=0.1)
    distiller.compile(keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = make_dataset((x, y), batch_size)
    print("RESULT", json.dumps(_timed_fit(distiller, dataset, epochs, batch_size, len(x))))
    """
)


def run_keras3(image_size: int, epochs: int, batch_size: int) -> dict:
    script = KERAS3_SCRIPT.format(
        bench_dir=os.path.dirname(os.path.abspath(__file__)),
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"Keras 3 run failed:\n{completed.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32, help="digits upsampled to this size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    results = run_tf_keras(args.image_size, args.epochs, args.batch_size)
    results["d"] = run_keras3(args.image_size, args.epochs, args.batch_size)
    names = {
        "a": "(a) student fit, labels only",
        "b": "(b) kd-keras Distiller, online",
        "c": "(c) kd-keras Distiller, cached teacher",
        "d": "(d) keras 3 Distiller, online",
    }
    print(f"digits 1797 images at {args.image_size}x{args.image_size}, batch {args.batch_size}")
    for key, name in names.items():
        r = results[key]
        print(f"{name:40s} {r['images_per_s']:9.0f} images/s  {r['step_ms']:7.2f} ms/step")
    b_over_d = results["b"]["images_per_s"] / results["d"]["images_per_s"]
    c_over_a = results["c"]["step_ms"] / results["a"]["step_ms"]
    print(f"(b)/(d) throughput: {b_over_d:.2f}x   (target >= 1.0x)")
    print(f"(c)/(a) step time:  {c_over_a:.2f}x   (target <= 1.15x)")


if __name__ == "__main__":
    main()
