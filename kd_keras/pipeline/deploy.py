"""The run's deploy bundle: `<output_dir>/deploy/`, what ships to the robot (`kd_runtime.bundle`).

Written after the shipped student's export, from the task's `DeploySpec`, the `.tflite`'s own
tensors and the run's figures; the same folder is kept with the registered MLflow model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from kd_keras.pipeline.task import DeploySpec
from kd_runtime.bundle import write_bundle
from kd_runtime.model import TFLiteModel

DEPLOY_DIR = "deploy"


def output_roles(output_names: list[str], heads: Mapping[str, str]) -> dict[str, str]:
    """Signature output name -> role, matching each head by name or by a prefixed name
    (`heatmap`, `quant_heatmap`).

    Raises:
        ValueError: a head matches no output, or several.
    """
    roles = {}
    for head, role in heads.items():
        matches = [n for n in output_names if n == head or n.split("_", 1)[-1] == head]
        if len(matches) != 1:
            raise ValueError(
                f"Cannot find the {head!r} output of the exported model: its outputs are "
                f"{output_names}. Received: heads={dict(heads)}."
            )
        roles[matches[0]] = role
    return roles


def write_deploy_bundle(
    spec: DeploySpec,
    tflite: Path,
    output: Path,
    *,
    mode: str,
    config_text: str,
    metrics: Mapping[str, object],
) -> Path:
    """Writes `output/deploy/` for the shipped `tflite`; returns the folder."""
    roles = output_roles(TFLiteModel(tflite).output_names, spec.heads)
    source = {
        "run": str(output.resolve()),
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "kd_keras_version": metadata.version("kd-keras"),
    }
    return write_bundle(
        output / DEPLOY_DIR,
        tflite,
        task=spec.task,
        classes=list(spec.classes),
        input_spec={
            "color": spec.color,
            "resize": spec.resize,
            "normalization": {k: float(v) for k, v in spec.normalization.items()},
        },
        roles=roles,
        decoder=spec.decoder,
        mode=mode,
        source=source,
    )


__all__ = ["DEPLOY_DIR", "output_roles", "write_deploy_bundle"]
