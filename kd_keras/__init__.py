"""kd-keras: knowledge distillation for tf_keras models that ship to robots.

Where things are, one hop from here:

    Distiller, terms, losses, schedules   the KD API: a frozen teacher, a student, composable
                                          terms (`LogitsDistillation`, `FeatureDistillation`),
                                          pure loss functions, temperature schedules
    kd_keras.methods      KD methods beyond the plain Distiller, one module each: offline,
                          online (OKDDip), adversarial (ARD), progressive, budget
    kd_keras.compress     TF-MOT pruning, QAT/PQAT, low-rank factoring, sparsity choice
    kd_keras.export       TFLite conversion; LiteRT evaluation, parity, latency
    kd_keras.models       reference CNN, LMA activation, safe model loading, layer inspection
    kd_keras.images       the image reader every task uses (as displayed, 8 bits, any format)
    kd_keras.unlabeled    unlabelled image folders, mixed into the labelled batches for KD
    kd_keras.pipeline     the stage sequence (`run_pipeline`), the `Task` contract (stages,
                          roles, students, methods), and its own pieces: resumable stages,
                          `run_state` and `fingerprint` (what an output folder holds, of what
                          data), `divergence` (the NaN guard), `distribute` (strategies by
                          name), `determinism` (same seed, same numbers), `settings` (the
                          config sections recipes share), `progress` (stage and epoch lines),
                          `reporting` (tables, seed means, KD gains), `builtin_teacher` (the
                          teachers tasks ship for their built-in data, `teacher: auto`)
    kd_keras.tracking     MLflow runs, the LiteRT pyfunc model, registry aliases, promotion
    kd_keras.config       typed YAML configs: safe loading, overrides, errors naming the key
    kd_keras.stats        paired differences over seeds with confidence intervals, gap closed
"""

from kd_keras import losses, schedules
from kd_keras.distiller import Distiller
from kd_keras.profile import ModelProfile, profile_model
from kd_keras.schedules import UpdateDistillationStep
from kd_keras.terms import DistillationTerm, FeatureDistillation, LogitsDistillation

__version__ = "0.1.0"

__all__ = [
    "DistillationTerm",
    "Distiller",
    "FeatureDistillation",
    "LogitsDistillation",
    "ModelProfile",
    "UpdateDistillationStep",
    "losses",
    "profile_model",
    "schedules",
]
