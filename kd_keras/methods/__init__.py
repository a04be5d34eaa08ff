"""KD methods beyond the plain `Distiller`, one module per method, each citing its paper.

    offline       cached teacher outputs: train without running the teacher (`offline_dataset`)
    online        OKDDip: a leader and peers teach each other, no teacher (`OnlineDistiller`)
    adversarial   ARD: robust students from PGD examples (`AdversarialDistiller`, `pgd`, `fgsm`)
    progressive   progressive blockwise KD (`block_distillers`, the `PROGRESSIVE` student)
    budget        widths learned under a FLOPs/params budget (`slim`, the `BUDGET` student)

A pipeline student names its method with a `Method` (`base.py`); a method that trains in phases
carries its `trainer`. Adding a method is one module here plus the task's choice of it.
"""

from kd_keras.methods import adversarial, budget, offline, online, progressive
from kd_keras.methods.adversarial import ROBUST, AdversarialDistiller
from kd_keras.methods.base import Method, Trainer
from kd_keras.methods.budget import BUDGET
from kd_keras.methods.online import OKDDIP, OnlineDistiller
from kd_keras.methods.progressive import PROGRESSIVE

__all__ = [
    "BUDGET",
    "OKDDIP",
    "PROGRESSIVE",
    "ROBUST",
    "AdversarialDistiller",
    "Method",
    "OnlineDistiller",
    "Trainer",
    "adversarial",
    "budget",
    "offline",
    "online",
    "progressive",
]
