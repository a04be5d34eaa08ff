"""Image classification KD: digits and image-folder data, class subsets, CNN teacher and student.

classification.config        ClassifyConfig, the settings of `recipes.classify`
classification.task          ClassificationTask: classification for the shared pipeline
classification.data          load_data (digits or an image folder, split), batches, augmentation
classification.subset        ClassSubset: a student of a subset of the teacher's classes
classification.models        build_classifier (teacher or student), stage_boundaries
classification.evaluation    top-1 accuracy and PGD accuracy of a classifier
classification.distillation  classification_kd_terms: soft targets and a FitNet hint
"""

from classification.config import ClassifyConfig
from classification.data import (
    ImageDataset,
    load_data,
    load_digits,
    load_image_folder,
    random_shift,
    training_dataset,
)
from classification.distillation import classification_kd_terms
from classification.evaluation import (
    evaluate_classifier,
    pgd_accuracy,
    robustness_measured,
    top1_accuracy,
)
from classification.models import build_classifier, stage_boundaries
from classification.subset import (
    ClassSubset,
    load_class_mapping,
    parse_classes,
    save_class_mapping,
)
from classification.task import ClassificationTask

__all__ = [
    "ClassSubset",
    "ClassificationTask",
    "ClassifyConfig",
    "ImageDataset",
    "build_classifier",
    "classification_kd_terms",
    "evaluate_classifier",
    "load_class_mapping",
    "load_data",
    "load_digits",
    "load_image_folder",
    "parse_classes",
    "pgd_accuracy",
    "random_shift",
    "robustness_measured",
    "save_class_mapping",
    "stage_boundaries",
    "top1_accuracy",
    "training_dataset",
]
