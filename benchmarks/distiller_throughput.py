"""Training throughput of the Distiller, interleaved with its references in one process.

Four contenders train the same architectures (`ARCHITECTURE`) on the same data, input pipeline
(batched, cached, repeated, prefetched `tf.data`) and optimizer:

    plain    the student alone on labels (tf_keras `fit`), the floor for (offline)
    offline  our Distiller from cached teacher outputs (`kd_keras.methods.offline`)
    online   our Distiller, with the teacher's forward pass in every step
    keras3   Keras 3's `keras.distillation.Distiller`, the reference for (online)

tf_keras and Keras 3 are separate packages and train side by side here, so all four share one
TensorFlow runtime and its thread pools.

Keras 3's default `LogitsDistillation()` applies no softmax and no T² (it scores the
temperature-scaled logits with `kl_divergence` directly), so it is not Hinton's loss; the
reference here uses `LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence())`,
which softens both sides and scales by T², the loss our `LogitsDistillation(T)` computes. The
script prints both Keras 3 values beside ours on the same logits.

Each contender is built and warmed up (traced, cache filled), then timed for `--steps` steps in
each of `--rounds` rounds. A round times each pair, (offline, plain) and (online, keras3), as
A B B A with half the steps each, so load from other processes, and any linear drift in the
machine's speed, hits both members of a pair alike; the pair that goes first and the member that
opens it alternate from round to round. A step's time is read between batch ends (fit set-up, the
first step and the iterator's teardown excluded); a contender's figure for a round is the mean
over its steps, i.e. its throughput. Printed: each contender's ms/step as the median over rounds
with min-max, and each ratio as the median of the per-round ratios with min-max.

    python benchmarks/distiller_throughput.py [--rounds 7] [--steps 60]

Targets: offline step <= 1.15x a plain step; online throughput >= 1.3x Keras 3's. Not a test;
never run in CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARCHITECTURE = {"teacher": (2.0, 1), "student": (0.25, 1), "base": (32, 64, 128)}
TEMPERATURE, KD_WEIGHT, STUDENT_WEIGHT = 4.0, 0.9, 0.1
PAIRS = (("offline", "plain"), ("online", "keras3"))
NAMES = {
    "plain": "student alone, labels",
    "offline": "kd-keras Distiller, cached teacher",
    "online": "kd-keras Distiller, online teacher",
    "keras3": "Keras 3 Distiller, online teacher",
}


def load_data(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits, upsampled to `image_size` (nearest) so the models do real work."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    repeat = image_size // 8
    x = np.repeat(np.repeat(x, repeat, axis=1), repeat, axis=2)[..., None]
    return x, digits.target.astype(np.int64)


def make_dataset(arrays: tuple, batch_size: int):
    """The same pipeline for every contender: full batches, cached, repeated, prefetched.

    As in `offline.offline_dataset`, tf.data autotuning is off: with it on, each `fit` (each
    epoch) ends waiting up to 2 s for the iterator's autotuning thread. The timed steps exclude
    that wait; timing whole `fit` calls, as this script once did, counted it (one cause of the
    0.70x-1.69x spread of its Keras 3 ratio between runs).
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.cache().repeat().prefetch(2).with_options(options)


class Contender:
    """A compiled model, its dataset and a timer callback of its own Keras."""

    def __init__(self, model, dataset, callback_base):
        self.model = model
        self.dataset = dataset

        class Timer(callback_base):
            def __init__(self):
                super().__init__()
                self.ends = []
                # tf_keras: do not pull the logs to NumPy for this callback alone.
                self._supports_tf_logs = True

            def on_train_batch_end(self, batch, logs=None):
                self.ends.append(time.perf_counter())

        self.timer = Timer()

    def run(self, steps: int) -> float:
        """Seconds per step over `steps` steps, between the first and the last batch end."""
        self.timer.ends = []
        self.model.fit(
            self.dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[self.timer]
        )
        ends = self.timer.ends
        return (ends[-1] - ends[0]) / (len(ends) - 1)


def build_tf_keras(x, y, batch_size: int) -> dict[str, Contender]:
    import tf_keras as keras

    from kd_keras import Distiller, LogitsDistillation
    from kd_keras.methods import offline
    from kd_keras.models import build_cnn_classifier

    def model(role: str):
        width, depth = ARCHITECTURE[role]
        base = ARCHITECTURE["base"]
        return build_cnn_classifier(x.shape[1:], 10, width, depth, base, name=role)

    def ce():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    keras.utils.set_random_seed(0)
    teacher = model("teacher")
    labelled = make_dataset((x, y), batch_size)
    contenders = {}

    student = model("student")
    student.compile(keras.optimizers.Adam(1e-3), loss=ce())
    contenders["plain"] = Contender(student, labelled, keras.callbacks.Callback)

    cache = offline.compute_teacher_outputs(teacher, x)
    distiller = Distiller(
        None,
        model("student"),
        LogitsDistillation(TEMPERATURE),
        [KD_WEIGHT],
        STUDENT_WEIGHT,
        teacher_output_shape=cache.output_shape,
    )
    distiller.compile(keras.optimizers.Adam(1e-3), loss=ce())
    cached = make_dataset((x, y, cache.outputs), batch_size)
    contenders["offline"] = Contender(distiller, cached, keras.callbacks.Callback)

    distiller = Distiller(
        teacher, model("student"), LogitsDistillation(TEMPERATURE), [KD_WEIGHT], STUDENT_WEIGHT
    )
    distiller.compile(keras.optimizers.Adam(1e-3), loss=ce())
    contenders["online"] = Contender(distiller, labelled, keras.callbacks.Callback)
    return contenders


def build_keras3(x, y, batch_size: int) -> Contender:
    """Keras 3's Distiller on a Keras 3 copy of `build_cnn_classifier` (same layers and sizes)."""
    import keras

    def model(role: str):
        width, depth = ARCHITECTURE[role]
        inputs = keras.Input(x.shape[1:])
        h, size = inputs, x.shape[1]
        for filters in ARCHITECTURE["base"]:
            for _ in range(depth):
                channels = max(4, round(filters * width))
                h = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(h)
                h = keras.layers.BatchNormalization(momentum=0.9)(h)
                h = keras.layers.ReLU()(h)
            if size >= 2:
                h = keras.layers.MaxPooling2D(2)(h)
                size //= 2
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h), name=role)

    keras.utils.set_random_seed(0)
    teacher = model("teacher")
    term = keras.distillation.LogitsDistillation(
        temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
    )
    distiller = keras.distillation.Distiller(
        teacher,
        model("student"),
        term,
        distillation_loss_weights=[KD_WEIGHT],
        student_loss_weight=STUDENT_WEIGHT,
    )
    distiller.compile(
        keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return Contender(distiller, make_dataset((x, y), batch_size), keras.callbacks.Callback)


def loss_check() -> dict[str, float]:
    """Keras 3's LogitsDistillation (default, and with KLDivergence) beside Hinton's T²·KL.

    Fixed random logits (standard deviation 4) for 64 examples and 10 classes, at the benchmark's
    temperature.
    """
    import keras

    from kd_keras import losses

    rng = np.random.default_rng(0)
    teacher_logits, student_logits = 4 * rng.standard_normal((2, 64, 10)).astype(np.float32)
    default = keras.distillation.LogitsDistillation(temperature=TEMPERATURE)
    kl = keras.distillation.LogitsDistillation(
        temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
    )
    hinton = losses.soft_target_kl(teacher_logits, student_logits, TEMPERATURE)
    return {
        "Keras 3, default LogitsDistillation": float(
            default.compute_loss(teacher_logits, student_logits)
        ),
        "Keras 3, loss=KLDivergence()": float(kl.compute_loss(teacher_logits, student_logits)),
        "kd-keras LogitsDistillation (T²·KL)": float(np.mean(hinton)),
    }


def _summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32, help="digits upsampled to this size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per contender a round")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps per contender")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    x, y = load_data(args.image_size)
    contenders = build_tf_keras(x, y, args.batch_size)
    contenders["keras3"] = build_keras3(x, y, args.batch_size)
    for name in ("plain", "offline", "online", "keras3"):
        # Twice: the first fit traces the step, the second runs the traced step in steady state.
        contenders[name].run(args.warmup)
        contenders[name].run(args.warmup)

    seconds = {name: [] for name in contenders}
    half = max(2, args.steps // 2)
    for round_index in range(args.rounds):
        flip = round_index % 2 == 1
        for pair in PAIRS[::-1] if flip else PAIRS:
            first, second = pair[::-1] if flip else pair
            halves = {first: [], second: []}
            for name in (first, second, second, first):
                halves[name].append(contenders[name].run(half))
            for name, times in halves.items():
                seconds[name].append(statistics.fmean(times))

    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(
        f"digits {len(x)} images at {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"T={TEMPERATURE:g}; TensorFlow {tf.__version__}, Keras {keras.__version__} "
        f"(jit_compile={contenders['keras3'].model.jit_compile}), {threads} threads"
    )
    print(
        f"{args.rounds} rounds x {2 * half} steps per contender, after {2 * args.warmup} "
        "warm-up steps; each pair timed A B B A in every round"
    )
    print()
    print(f"{'contender':44s} {'ms/step median [min-max]':>26s} {'images/s':>9s}")
    for name, times in seconds.items():
        median, low, high = _summary([1000 * s for s in times])
        label = f"{name:8s} {NAMES[name]}"
        images = args.batch_size / (median / 1000)
        print(f"{label:44s} {median:8.2f} [{low:6.2f}-{high:6.2f}]   {images:9.0f}")
    print()
    print("per round, ms/step: " + "  ".join(f"{name}" for name in seconds))
    for round_index in range(args.rounds):
        row = "  ".join(f"{1000 * seconds[name][round_index]:.2f}" for name in seconds)
        print(f"  round {round_index + 1}: {row}")
    print()
    ratios = {
        "offline step / plain step (target <= 1.15x)": [
            a / b for a, b in zip(seconds["offline"], seconds["plain"])
        ],
        "online throughput / keras 3 (target >= 1.3x)": [
            b / a for a, b in zip(seconds["online"], seconds["keras3"])
        ],
    }
    print("ratio (median of per-round ratios [min-max])")
    for label, values in ratios.items():
        median, low, high = _summary(values)
        print(f"  {label:46s} {median:5.2f}x [{low:.2f}-{high:.2f}]")
    print()
    print(f"distillation loss on the same logits (T={TEMPERATURE:g}):")
    for label, value in loss_check().items():
        print(f"  {label:38s} {value:8.3f}")


if __name__ == "__main__":
    main()
