"""Plain descriptions of models and distillers, for run params (`RunSession.finish(params=...)`)."""

from __future__ import annotations

_LAYER_KEYS = ("name", "trainable", "dtype")


def describe_model(model) -> dict:
    """Name, weight count, layer count and input/output shapes of a Keras model."""
    return {
        "name": model.name,
        "params": int(model.count_params()),
        "layers": len(model.layers),
        "input_shape": _shape(model.input_shape),
        "output_shape": _shape(model.output_shape),
    }


def describe_distiller(distiller) -> dict:
    """Teacher, student, every KD term (class, layers, loss, temperature schedule) and weights.

    Example:
        >>> session.finish(config, report, params={"distiller": describe_distiller(distiller)})
        # params: distiller.student.params, distiller.terms.logits_kd.temperature.config.values...
    """
    return describe_distillation(
        distiller.teacher,
        distiller.student,
        distiller.distillation_losses,
        distiller.distillation_loss_weights,
        distiller.student_loss_weight,
    )


def describe_distillation(teacher, student, terms, weights, student_loss_weight) -> dict:
    """What `describe_distiller` says of a Distiller, from its parts (nothing is built).

    `teacher` is `None` for offline KD; weights may be numbers or schedules.
    """
    from kd_keras import schedules

    described = {}
    for term, weight in zip(terms, weights):
        config = {k: v for k, v in term.get_config().items() if k not in _LAYER_KEYS}
        described[term.name] = {
            "class": type(term).__name__,
            **config,
            "weight": _schedule(schedules.get(weight)),
        }
    return {
        "teacher": "offline (cached outputs)" if teacher is None else describe_model(teacher),
        "student": describe_model(student),
        "student_loss_weight": _schedule(schedules.get(student_loss_weight)),
        "terms": described,
    }


def _schedule(schedule) -> dict:
    return {"class": type(schedule).__name__, **schedule.get_config()}


def _shape(shape) -> list:
    if isinstance(shape, list):
        return [_shape(s) for s in shape]
    return list(shape[1:])
