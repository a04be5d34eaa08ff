"""Image classification KD as a `kd_keras.pipeline.Task`: Hinton soft targets, hints, offline KD.

`ClassificationTask(config)` loads the data (scikit-learn's digits or an image folder), and
gives the pipeline CNN classifiers (`kd_keras.models.build_cnn_classifier`), cross-entropy,
`LogitsDistillation` (+ a FitNet hint on `features`), top-1 accuracy in Keras and LiteRT, and
the knee-of-the-curve sparsity choice (`compress.sparsity: auto`). With `classes` the student
learns a subset of the teacher's classes; with `offline` it learns from cached teacher outputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tf_keras as keras

from classification import data as data_lib
from classification import evaluation, models
from classification.distillation import DKD_METHOD, classification_kd_terms
from classification.subset import ClassSubset, save_class_mapping
from classification.synthetic import UNLABELED
from kd_keras import compress, export, losses
from kd_keras.distiller import Distiller
from kd_keras.images import read_resized
from kd_keras.methods import BUDGET, OKDDIP, PROGRESSIVE, ROBUST, Method, OnlineDistiller, offline
from kd_keras.methods.adversarial import AdversarialDistiller
from kd_keras.models.graph import output_layer
from kd_keras.models.inspect import final_activation
from kd_keras.pipeline import DeploySpec, Role, Stage, Student, Task, Training, table_columns
from kd_keras.pipeline.fingerprint import file_listing

#: A student with LMA activations, distilled like the shipped one.
LMA_METHOD = Method("lma", "LMA activations")


class ClassificationTask(Task):
    """Classification for the shared pipeline; `config` is a `ClassifyConfig`."""

    name = "classification"
    headline = "accuracy"
    metric_keys = ("accuracy",)
    columns = table_columns(
        ("accuracy", "pgd_accuracy"),
        digits=4,
        extra=(("gzip_bytes", "gzip (bytes)", ","), ("sparsity", "sparsity", ".2f")),
    )
    methods = (LMA_METHOD, ROBUST, OKDDIP, BUDGET, PROGRESSIVE, DKD_METHOD)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.train, self.test = data_lib.load_data(config)
        self.subset = None
        self.x_train, self.y_train = self.train.x, self.train.y
        self.x_test, self.y_test = self.test.x, self.test.y
        if config.classes is not None:
            self.subset = ClassSubset(config.classes, tuple(self.train.class_names))
            self.x_train, self.y_train = self.subset.select(self.train.x, self.train.y)
            self.x_test, self.y_test = self.subset.select(self.test.x, self.test.y)
            self._check_subset(self.train.num_classes)
        self.augmentation = data_lib.random_shift(1, config.seed) if config.augment else None

    def read_unlabeled(self, path: Path) -> np.ndarray:
        """An unlabelled image as the training inputs: resized to `image_size`², in [0, 1]."""
        height, width, channels = self.train.input_shape
        return read_resized(path, (height, width), channels).astype(np.float32) / 255.0

    # --- data and models ---

    def builtin_unlabeled(self) -> Path:
        """The built-in shapes' `unlabeled/` images."""
        if self.config.data is not None or self.config.builtin != "shapes":
            return super().builtin_unlabeled()
        return Path(self.config.builtin_dir) / UNLABELED

    @property
    def description(self) -> str:
        if self.config.data is None and self.config.builtin == "shapes":
            return f"built-in shapes on photos ({self.config.builtin_dir})"
        return self.config.data or "sklearn digits (built-in)"

    def data_fingerprint(self) -> dict:
        if self.config.data is None and self.config.builtin == "shapes":
            return {"generator": dataclasses.asdict(data_lib.shapes_settings(self.config))}
        if self.config.data is None:
            return {"generator": "sklearn.datasets.load_digits"}
        root = Path(self.config.data)
        return {"images": file_listing(data_lib.list_image_folder(root), root)}

    def summary(self) -> dict:
        return {
            "classes": None if self.subset is None else self.subset.to_json(),
            "train_examples": int(len(self.x_train)),
            "test_examples": int(len(self.x_test)),
        }

    def check_teacher(self, teacher: keras.Model, path: str) -> None:
        expected = tuple(teacher.input_shape[1:])
        if expected != self.train.input_shape:
            raise ValueError(
                f"The teacher expects inputs of shape {expected} but the data has "
                f"{self.train.input_shape}. Set image_size/channels to match. "
                f"Received: teacher={path}."
            )
        self._check_teacher_outputs(teacher, path)
        classes = teacher.output_shape[-1]
        if self.subset is not None:
            self._check_subset(classes)
        elif classes != self.train.num_classes:
            raise ValueError(
                f"The teacher predicts {classes} classes but the data has "
                f"{self.train.num_classes} ({', '.join(self.train.class_names)}). Pass --classes "
                f"to distill a subset, or a teacher trained on these classes. "
                f"Received: teacher={path}."
            )

    def _check_teacher_outputs(self, teacher: keras.Model, path: str) -> None:
        declared = self.config.distill.teacher_outputs
        activation = final_activation(output_layer(teacher))
        ends_in_softmax = activation == "softmax"
        if ends_in_softmax == (declared == "probabilities") or activation is None:
            return
        if ends_in_softmax:
            fix = "declare them with --set distill.teacher_outputs=probabilities"
            found = "ends in a softmax (it outputs probabilities)"
        else:
            fix = "use --set distill.teacher_outputs=logits (the default)"
            found = f"ends in a {activation} activation, not a softmax (it outputs logits)"
        raise ValueError(
            f"The teacher {path} {found}, but distill.teacher_outputs={declared!r}; {fix}. "
            f"Received: teacher={path}."
        )

    def _check_subset(self, teacher_classes: int) -> None:
        if max(self.subset.class_indices) >= teacher_classes:
            raise ValueError(
                f"--classes asks for class {max(self.subset.class_indices)}, but the teacher has "
                f"{teacher_classes} classes. Received: classes={list(self.config.classes)}."
            )

    @property
    def _class_indices(self) -> tuple[int, ...] | None:
        """The teacher class of each student class, with `classes`."""
        return None if self.subset is None else self.subset.class_indices

    def build(self, role: str, name: str, student: Student | None = None) -> keras.Model:
        classes = self.train.num_classes
        if role == "student" and self.subset is not None:
            classes = self.subset.num_classes
        lma = student is not None and student.method == LMA_METHOD
        return models.build_classifier(
            self.config,
            role,
            self.train.input_shape,
            classes,
            name,
            activation="lma" if lma else None,
        )

    def block_boundaries(self, teacher: keras.Model, student: keras.Model):
        """The stages' ends (`stage<i>_pool`): both networks have one stage per base width."""
        return models.stage_boundaries(teacher, student)

    # --- training ---

    def _compile(self, model: keras.Model, learning_rate: float, loss: bool = True) -> None:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=losses.global_batch_loss(keras.losses.SparseCategoricalCrossentropy(True))
            if loss
            else None,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    def _labelled(self, x: np.ndarray, y: np.ndarray, augment: bool = True):
        augmentation = self.augmentation if augment else None
        return data_lib.training_dataset(
            x, y, self.config.batch_size, self.config.seed, augmentation
        )

    def data(self, stage: Stage):
        """Shuffled batches; the teacher learns every class, compression sees no augmentation."""
        if stage.role is Role.TEACHER:
            return self._labelled(self.train.x, self.train.y), None
        return self._labelled(self.x_train, self.y_train, augment=not stage.compressing), None

    def kd_terms(self, stage: Stage, student: keras.Model) -> tuple[list, list]:
        """Hinton soft targets (on the subset's classes with `classes`), plus a FitNet hint on
        `features` when `hint_weight > 0`, or a cross-entropy one while a factored student
        recovers (knowledge pre-regression); decoupled KD for the `dkd` student."""
        batches = int(np.ceil(len(self.x_train) / self.config.batch_size))
        steps = stage.epochs * self.batches_per_epoch(batches)
        return classification_kd_terms(
            self.config,
            steps,
            student,
            self._class_indices,
            lowrank=stage.role is Role.LOWRANK,
            loss="dkd" if stage.method == DKD_METHOD else None,
        )

    def plain(self, model: keras.Model, stage: Stage) -> Training:
        self._compile(model, stage.learning_rate)
        return Training(model, self.data(stage)[0])

    def distilled(self, teacher: keras.Model, student: keras.Model, stage: Stage) -> Training:
        config, settings = self.config, self.config.distill
        if stage.method == OKDDIP:
            return self._online(student, stage)
        terms, weights = self.kd_terms(stage, student)
        if config.offline:
            cache = offline.compute_teacher_outputs(teacher, self.x_train)
            cache_dir = Path(config.output_dir) / "teacher_cache"
            if not cache_dir.exists():
                offline.save_teacher_cache(cache, cache_dir)
            distiller = Distiller(
                None,
                student,
                terms,
                weights,
                settings.student_loss_weight,
                teacher_output_shape=cache.output_shape,
            )
            data = offline.offline_dataset(
                self.x_train, self.y_train, cache, config.batch_size, seed=config.seed
            )
            pool_outputs = None
            if self.unlabeled is not None:
                pool = offline.compute_teacher_outputs(teacher, self.unlabeled.images)
                pool_outputs = pool.outputs
            data = self.with_unlabeled(data, stage, teacher_outputs=pool_outputs)
        elif stage.method == ROBUST or (settings.robust and stage.method is None):
            distiller = AdversarialDistiller(
                teacher,
                student,
                terms,
                weights,
                settings.student_loss_weight,
                epsilon=settings.adversarial_epsilon,
                steps=settings.adversarial_steps,
                adversarial_weight=settings.adversarial_weight,
            )
            data = self.with_unlabeled(self.data(stage)[0], stage)
        else:
            distiller = Distiller(teacher, student, terms, weights, settings.student_loss_weight)
            data = self.with_unlabeled(self.data(stage)[0], stage)
        self._compile(distiller, stage.learning_rate)
        return Training(distiller, data)

    def _online(self, leader: keras.Model, stage: Stage) -> Training:
        """The leader among `distill.peers` peers of its size, learning from each other."""
        peers = [
            self.build("student", f"peer_{index}") for index in range(self.config.distill.peers)
        ]
        group = OnlineDistiller(leader, peers, temperature=self.config.distill.temperature)
        group.compile(
            keras.optimizers.Adam(stage.learning_rate),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        return Training(group, self._labelled(self.x_train, self.y_train))

    # --- evaluation ---

    def evaluate(self, model: keras.Model) -> dict:
        return evaluation.evaluate_classifier(model, self.x_test, self.y_test, self.config)

    def evaluate_teacher(self, teacher: keras.Model) -> dict:
        return evaluation.evaluate_classifier(
            teacher, self.x_test, self.y_test, self.config, self._class_indices
        )

    def deploy_spec(self) -> DeploySpec:
        """The `logits` output (softmax on the robot); the subset's names with `classes`."""
        names = self.train.class_names
        if self.subset is not None:
            names = [names[index] for index in self.subset.class_indices]
        return DeploySpec(
            task="classification",
            classes=tuple(names),
            heads={"logits": "logits"},
            decoder={"activation": "softmax"},
            normalization={"mean": 0.0, "std": self.train.sample_max},
            color="L" if self.train.input_shape[-1] == 1 else "RGB",
        )

    def evaluate_tflite(self, path: Path) -> dict:
        return {"accuracy": export.evaluate_tflite(path, self.x_test, self.y_test)}

    def parity(self, model: keras.Model, path: Path) -> dict:
        return export.parity_report(model, path, self.x_test)

    def parity_metric(self, parity) -> float:
        return parity["top1_agreement"]

    # --- compression ---

    def sparsity(self, student: keras.Model, output: Path) -> tuple[float | None, dict]:
        """`compress.sparsity`, or with `auto` the knee of the one-shot accuracy curve.

        The curve prunes at each candidate, adapts BN on 4 training batches and scores on the
        training examples: the test set stays untouched for the final report.
        """
        settings, batch = self.config.compress, self.config.batch_size
        if settings.sparsity != "auto":
            return (settings.sparsity or None), {}
        calibration = [
            self.x_train[i : i + batch] for i in range(0, min(len(self.x_train), 4 * batch), batch)
        ]
        sparsities, accuracies = compress.sparsity_curve(
            student,
            settings.candidates,
            lambda model: evaluation.top1_accuracy(model, self.x_train, self.y_train),
            calibration,
        )
        curve = compress.choose_sparsity(sparsities, accuracies, settings.max_drop)
        files = {
            f"sparsity_curve_{k}": str(v) for k, v in compress.save_curve(curve, output).items()
        }
        return (curve.chosen or None), {"sparsity_curve": curve.as_dict(), "artifacts": files}

    def prune(self, student: keras.Model, sparsity: float) -> keras.Model:
        """Polynomial ramp over the first 60% of fine-tuning; the rest recovers at full sparsity."""
        settings = self.config.compress
        steps_per_epoch = int(np.ceil(len(self.x_train) / self.config.batch_size))
        frequency = max(1, int(0.6 * settings.prune_epochs * steps_per_epoch) // 10)
        # A kept layer stays dense also when factored into `<name>_v` and `<name>_h`.
        names = {layer.name for layer in student.layers}
        keep = [n for k in settings.keep_dense for n in (k, f"{k}_v", f"{k}_h") if n in names]
        return compress.prune(
            student,
            sparsity,
            "polynomial",
            end_step=10 * frequency,
            frequency=frequency,
            exclude=keep,
        )

    def calibration_images(self) -> np.ndarray:
        return self.x_train[: self.config.compress.calibration_images]

    # --- report ---

    def input_example(self) -> np.ndarray:
        return self.x_test[:2]

    def artifacts(self, output: Path, student_path: Path) -> dict[str, str]:
        if self.subset is None:
            return {}
        return {"class_mapping": str(save_class_mapping(student_path, self.subset))}
