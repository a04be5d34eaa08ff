"""ReID distillation: embedding-level terms beside logits KD with a dynamic temperature.

The dynamic temperature of logits KD on the identity classifier is `distill.temperature_schedule`
(`kd_keras.schedules.from_name`, the one entry point): it starts soft and ends at exactly
`final_temperature` (1) on the last step.
- `SimilarityDistillation` matches the batch's pairwise similarity structure, which needs no
  common embedding size between teacher and student.
- `ProjectionDistillation` maps the student embedding to the teacher's size with a learned
  linear projection and matches directions.

Both embedding terms read named layers (`teacher_layer` / `student_layer`, `"embedding"` for
models from `reid.models`), so they compose with `LogitsDistillation(teacher_layer="logits",
student_layer="logits")` in one `Distiller`; `reid_kd_terms` picks a stage's terms and weights.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from kd_keras import compress, schedules
from kd_keras.terms import DistillationTerm, LogitsDistillation
from reid.config import DistillSettings

_PACKAGE = "reid"


def _normalize(x: tf.Tensor) -> tf.Tensor:
    x = tf.reshape(x, [tf.shape(x)[0], -1])
    return tf.math.l2_normalize(x, axis=-1)


def similarity_matrix(embeddings, kind: str = "cosine") -> tf.Tensor:
    """`[b, b]` batch similarities: cosine of each pair, or Tung & Mori's row-normalized Gram."""
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    if kind == "cosine":
        unit = _normalize(embeddings)
        return tf.matmul(unit, unit, transpose_b=True)
    flat = tf.reshape(embeddings, [tf.shape(embeddings)[0], -1])
    return tf.math.l2_normalize(tf.matmul(flat, flat, transpose_b=True), axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SimilarityDistillation(DistillationTerm):
    """The student's batch similarity structure imitates the teacher's; sizes may differ.

    Formula (batch of b, `similarity="cosine"`, S[i, j] = cos(f_i, f_j)):
        loss_i = (1/b) Σ_j (S_t[i, j] − S_s[i, j])²,   mean_i loss_i = ‖S_t − S_s‖²_F / b²
    Formula (`similarity="gram"`, similarity-preserving KD):
        G = F·Fᵀ with rows L2-normalized, then the same squared difference.

    Only `b × b` matrices are compared, so a 32-d student can learn from a 128-d teacher without
    any adapter. No temperature. (Tung & Mori, "Similarity-Preserving Knowledge Distillation",
    ICCV 2019; Park et al., "Relational Knowledge Distillation", CVPR 2019.)

    Args:
        teacher_layer: teacher layer giving the embedding (e.g. `"embedding"`).
        student_layer: student layer giving the embedding.
        similarity: `"cosine"` or `"gram"`.
    """

    SIMILARITIES = ("cosine", "gram")

    def __init__(
        self,
        teacher_layer: str | None = "embedding",
        student_layer: str | None = "embedding",
        similarity: str = "cosine",
        **kwargs,
    ):
        if similarity not in self.SIMILARITIES:
            raise ValueError(
                f"Expected similarity in {self.SIMILARITIES}. Received: similarity={similarity!r}."
            )
        super().__init__(teacher_layer, student_layer, None, **kwargs)
        self.similarity = similarity

    def compute(self, teacher_output, student_output, labels, temperature):
        teacher = similarity_matrix(teacher_output, self.similarity)
        student = similarity_matrix(student_output, self.similarity)
        return tf.reduce_mean(tf.square(teacher - student), axis=-1)

    def get_config(self):
        config = super().get_config()
        config["similarity"] = self.similarity
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ProjectionDistillation(DistillationTerm):
    """A learned projection of the student embedding points where the teacher's does.

    Formula:
        loss_i = 1 − cos(W·s_i + c, t_i)

    `W` (a Dense layer created in `build_for`, trained with the student and dropped at export)
    maps the student size to the teacher size, so the sizes may differ. (The learned regressor of
    Romero et al., "FitNets", 2015, with a cosine objective, suited to embeddings compared by
    cosine distance.)
    """

    def __init__(
        self,
        teacher_layer: str | None = "embedding",
        student_layer: str | None = "embedding",
        **kwargs,
    ):
        super().__init__(teacher_layer, student_layer, None, **kwargs)
        self.projection = None

    def build_for(self, teacher_shape, student_shape, teacher_source, student_source):
        if teacher_shape.rank != 2 or student_shape.rank != 2:
            raise ValueError(
                "ProjectionDistillation reads embedding vectors [batch, d]; name an embedding "
                f"layer. Received: teacher shape={tuple(teacher_shape)}, student "
                f"shape={tuple(student_shape)}."
            )
        self.projection = keras.layers.Dense(teacher_shape[-1], name=f"{self.name}_projection")
        self.projection.build(student_shape)
        super().build_for(teacher_shape, student_shape, teacher_source, student_source)

    def compute(self, teacher_output, student_output, labels, temperature):
        projected = _normalize(self.projection(student_output))
        return 1.0 - tf.reduce_sum(projected * _normalize(teacher_output), axis=-1)


def reid_kd_terms(
    settings: DistillSettings,
    temperature: float | schedules.Schedule,
    student: keras.Model,
) -> tuple[list, list]:
    """Logits KD at `temperature` on the identity classifier, plus embedding KD.

    The embedding term is `settings.embedding_kd` (`similarity` or `projection`) when
    `embedding_weight > 0`. The student's layers are found by name in a possibly wrapped
    (pruned, QAT) model.

    Args:
        settings: the run's `distill` section.
        temperature: the logits term's temperature, a number or a schedule of the step.
        student: the student, possibly wrapped for pruning or QAT.

    Returns:
        `(terms, weights)`: the KD terms and their loss weights, in the same order.
    """

    def name(layer):
        return compress.wrapped_layer_name(student, layer)

    terms = [
        LogitsDistillation(
            temperature=temperature,
            teacher_layer="logits",
            student_layer=name("logits"),
            name="logits_kd",
        )
    ]
    weights = [settings.logits_weight]
    if settings.embedding_kd != "none" and settings.embedding_weight > 0:
        term = {"similarity": SimilarityDistillation, "projection": ProjectionDistillation}
        layers = "embedding", name("embedding")
        terms.append(term[settings.embedding_kd](*layers, name="embedding_kd"))
        weights.append(settings.embedding_weight)
    return terms, weights
