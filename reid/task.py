"""Person re-identification KD as a `kd_keras.pipeline.Task`, with a dynamic temperature.

`ReIDTask(config)` loads a Market-1501 folder (the built-in synthetic one, written on first
use, or the user's) and gives the pipeline ReID networks with a BNNeck, identity + triplet
losses on P×K batches, logits KD whose temperature falls from `temperature` to
`final_temperature` (+ embedding KD), and CMC / mAP under the Market-1501 protocol in Keras and
LiteRT. Students are trained for each of `seeds`; the first seed's rows are tabled with the
means over all seeds. Compression starts from the BNNeck-folded student, and its embedding
model is what ships.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tf_keras as keras

from kd_keras import compress, schedules
from kd_keras.distiller import Distiller
from kd_keras.export import tflite_predict
from kd_keras.images import read_resized
from kd_keras.losses import global_batch_loss
from kd_keras.pipeline import DeploySpec, Role, Stage, Student, Task, Training, table_columns
from kd_keras.pipeline.fingerprint import file_listing
from reid import data as data_lib
from reid.distillation import reid_kd_terms
from reid.evaluation import evaluate_dataset, keras_embedder
from reid.losses import IdentityLoss, ReIDLoss, TripletLoss
from reid.market1501 import SPLITS, list_split
from reid.models import build_reid_model, embedding_model, fold_bnneck
from reid.sampler import PKSampler, pk_dataset
from reid.synthetic import MARKER, UNLABELED


class ReIDTask(Task):
    """ReID for the shared pipeline; `config` is a `reid.config.ReIDConfig`."""

    name = "reid"
    headline = "mAP"
    metric_keys = ("rank1", "mAP")
    columns = table_columns(("rank1", "rank5", "mAP"))
    calibration_split = "bounding_box_train"
    ptq_reference = True
    # `python -m recipes.teacher reid` makes it: the recipe's teacher from seed 0.
    builtin_teacher_dir = Path(__file__).parent / "teachers"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.data, self.source = data_lib.load_data(config)
        self.labels, person_ids = self.data.train.labels()
        self.identities = len(person_ids)
        if self.identities < config.p:
            raise ValueError(
                f"p={config.p} identities per batch, but the training split has only "
                f"{self.identities}. Lower p. Received: p={config.p}."
            )

    def read_unlabeled(self, path: Path) -> np.ndarray:
        """An unlabelled crop as the training images: resized to `(height, width)`, in [0, 1]."""
        height, width = self.data.input_shape[:2]
        return read_resized(path, (height, width)).astype(np.float32) / 255.0

    def builtin_unlabeled(self) -> Path:
        """The built-in folder's `unlabeled/` crops of the training people."""
        if self.config.data is not None:
            return super().builtin_unlabeled()
        return data_lib.builtin_root(self.config) / UNLABELED

    @property
    def description(self) -> str:
        return self.source

    def summary(self) -> dict:
        return {
            "train_images": len(self.data.train),
            "train_identities": self.identities,
            "query_images": len(self.data.query),
            "gallery_images": len(self.data.gallery),
        }

    def data_fingerprint(self) -> dict:
        if self.config.data is None:
            marker = data_lib.builtin_root(self.config) / MARKER
            return {"generator": json.loads(marker.read_text())}
        root = Path(self.config.data)
        return {
            split: file_listing([path for path, _ in list_split(root, split)], root)
            for split in SPLITS
        }

    def check_teacher(self, teacher: keras.Model, path: str) -> None:
        if len(teacher.outputs) != 2 or tuple(teacher.input_shape[1:]) != self.data.input_shape:
            raise ValueError(
                "Expected a two-output ReID model from reid.models.build_reid_model taking "
                f"{self.data.input_shape} images. Received: teacher={path} with input shape "
                f"{teacher.input_shape} and {len(teacher.outputs)} output(s)."
            )
        if teacher.output_shape[1][-1] != self.identities:
            raise ValueError(
                f"The teacher classifies {teacher.output_shape[1][-1]} identities but the "
                f"training split has {self.identities}. Received: teacher={path}."
            )

    def build(self, role: str, name: str, student: Student | None = None) -> keras.Model:
        spec = self.config.teacher_model if role == "teacher" else self.config.student_model
        return build_reid_model(
            self.data.input_shape,
            self.identities,
            spec.backbone,
            spec.width,
            spec.embedding_dim,
            spec.depth,
            name=name,
            weights=spec.weights,
        )

    def students(self) -> list[Student]:
        """Scratch, constant-T KD (with `compare_constant`) and dynamic-T KD for every seed."""
        config, settings = self.config, self.config.distill
        total = config.epochs * self.batches_per_epoch(config.steps_per_epoch)
        dynamic = settings.temperature_schedule(total)
        variants = [("scratch", "scratch", None)]
        if settings.compare_constant:
            constant = schedules.Constant(settings.temperature)
            variants.append(("KD_constant_T", "KD constant T", constant))
        variants.append(("KD_dynamic_T", f"KD dynamic T, {settings.schedule}", dynamic))
        students = []
        for seed in config.seeds:
            first = seed == config.seeds[0]
            for tag, label, temperature in variants:
                stage = f"{tag}_{seed}"
                ships = first and temperature is dynamic
                students.append(
                    Student(
                        stage,
                        label,
                        "student.keras" if ships else f"students/{stage}.keras",
                        distilled=temperature is not None,
                        variant=temperature,
                        seed=seed,
                        ships=ships,
                        tabled=first,
                        logged_as=stage,
                    )
                )
        return students

    # --- training ---

    def _steps(self, stage: Stage) -> int:
        if stage.role is Role.TEACHER:
            return self.config.teacher_steps_per_epoch
        return self.config.steps_per_epoch

    def _data(self, stage: Stage):
        steps = stage.epochs * self._steps(stage)
        sampler = PKSampler(self.labels, self.config.p, self.config.k, seed=stage.seed)
        images = self.data.train.images
        return pk_dataset(images, self.labels, sampler, steps, self.config.augment, stage.seed)

    def _optimizer(
        self, stage: Stage, steps_per_epoch: int | None = None
    ) -> keras.optimizers.Optimizer:
        steps = stage.epochs * (steps_per_epoch or self._steps(stage))
        decay = keras.optimizers.schedules.CosineDecay(stage.learning_rate, steps)
        return keras.optimizers.Adam(decay)

    def plain(self, model: keras.Model, stage: Stage) -> Training:
        config = self.config
        losses = [TripletLoss(config.margin), IdentityLoss(config.label_smoothing)]
        losses = [global_batch_loss(loss) for loss in losses]
        model.compile(self._optimizer(stage), loss=losses)
        return Training(model, self._data(stage), self._steps(stage))

    def data(self, stage: Stage):
        return self._data(stage), self._steps(stage)

    def kd_terms(self, stage: Stage, student: keras.Model) -> tuple[list, list]:
        """Logits KD at the student's temperature (1 while compressing), plus embedding KD;
        the student's layers are found by name in a possibly wrapped (pruned, QAT) model."""
        temperature = 1.0 if stage.compressing else stage.variant
        return reid_kd_terms(self.config.distill, temperature, student)

    def distilled(self, teacher: keras.Model, student: keras.Model, stage: Stage) -> Training:
        config, settings = self.config, self.config.distill
        terms, weights = self.kd_terms(stage, student)
        distiller = Distiller(teacher, student, terms, weights, settings.student_loss_weight)
        labelled = self._steps(stage)
        steps = self.batches_per_epoch(labelled)
        distiller.compile(
            self._optimizer(stage, steps), loss=ReIDLoss(config.label_smoothing, config.margin)
        )
        data = self.with_unlabeled(
            self._data(stage), stage, labelled, batch_size=config.p * config.k, epochs=stage.epochs
        )
        return Training(distiller, data, steps)

    # --- evaluation ---

    def evaluate(self, model: keras.Model) -> dict:
        return evaluate_dataset(keras_embedder(embedding_model(model)), self.data).as_dict()

    def deploy_spec(self) -> DeploySpec:
        """The embedding output, compared by cosine distance as in the evaluation."""
        return DeploySpec(
            task="reid",
            classes=(),
            heads={"embedding": "embedding"},
            decoder={"embedding_dim": self.config.student_model.embedding_dim, "metric": "cosine"},
        )

    def evaluate_tflite(self, path: Path) -> dict:
        return evaluate_dataset(lambda images: tflite_predict(path, images), self.data).as_dict()

    def deployable(self, model: keras.Model) -> keras.Model:
        return embedding_model(model)

    def parity(self, model: keras.Model, path: Path) -> dict:
        """Cosine between the Keras and LiteRT embeddings of the query images."""
        images = self.data.query.images
        expected = np.asarray(model.predict(images, verbose=0))
        actual = tflite_predict(path, images)
        cosine = np.sum(expected * actual, 1) / (
            np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1) + 1e-12
        )
        return {
            "mean_cosine": float(cosine.mean()),
            "min_cosine": float(cosine.min()),
            "max_abs_diff": float(np.abs(expected - actual).max()),
            "examples": len(expected),
        }

    def parity_metric(self, parity) -> float:
        return parity["mean_cosine"]

    # --- compression ---

    def before_compression(self, student: keras.Model) -> keras.Model:
        return fold_bnneck(student, name="student_folded")

    def prune(self, student: keras.Model, sparsity: float) -> keras.Model:
        """Polynomial ramp over the first two thirds of the pruning fine-tune."""
        steps = self.config.compress.prune_epochs * self.config.steps_per_epoch
        return compress.prune(
            student,
            sparsity,
            "polynomial",
            end_step=max(1, steps * 2 // 3),
            frequency=max(1, steps // 10),
        )

    def calibration_images(self) -> np.ndarray:
        return self.data.train.images[: self.config.compress.calibration_images]

    def input_example(self) -> np.ndarray:
        return self.data.query.images[:2]
