"""Paired comparisons over seeds: is the distilled student better than scratch, and by how much?

Within a seed the two students start from the same weights and see the same batches, so each
seed gives one difference `d_i = treated_i − baseline_i`, and the seeds are compared pair by
pair rather than as two independent samples:

    mean = (1/n) Σ d_i,   s = sqrt(Σ (d_i − mean)² / (n − 1)),
    95% interval = mean ± t_{0.975, n−1} · s / sqrt(n)     (Student's t, n − 1 dof)

The fraction of the teacher–scratch gap a student closes is, per seed,
`(student_i − scratch_i) / (teacher_i − scratch_i)`, summarised the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from scipy import stats as scipy_stats


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """The mean of per-seed values with its confidence interval (`low`, `high`)."""

    mean: float
    low: float
    high: float
    confidence: float
    values: tuple[float, ...]

    @property
    def seeds(self) -> int:
        return len(self.values)

    @property
    def above_zero(self) -> bool:
        """Whether the whole interval lies above zero."""
        return self.low > 0

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "seeds": self.seeds,
            "values": list(self.values),
        }

    def text(self, digits: int = 3) -> str:
        """`+0.012 [-0.004, +0.028] (95%, 5 seeds)`."""
        return interval_text(self.as_dict(), digits)


def interval_text(summary: Mapping, digits: int = 3) -> str:
    """A `PairedDifference.as_dict()` (as stored in a report) as `+0.012 [-0.004, +0.028] (95%,
    5 seeds)`."""
    spec = f"+.{digits}f"
    return (
        f"{summary['mean']:{spec}} [{summary['low']:{spec}}, {summary['high']:{spec}}] "
        f"({summary['confidence']:.0%}, {summary['seeds']} seeds)"
    )


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """The mean of `values` and its Student-t confidence interval.

    Raises:
        ValueError: fewer than two values (one seed has no spread), or a confidence outside (0, 1).
    """
    values = tuple(float(v) for v in values)
    if len(values) < 2:
        raise ValueError(
            f"Expected at least 2 seeds for a confidence interval. Received: {len(values)}."
        )
    if not 0 < confidence < 1:
        raise ValueError(f"Expected 0 < confidence < 1. Received: confidence={confidence}.")
    n = len(values)
    mean = math.fsum(values) / n
    spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * spread / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, confidence, values)


def paired_difference(
    treated: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of `treated_i − baseline_i` over seeds (paired) with its confidence interval."""
    if len(treated) != len(baseline):
        raise ValueError(
            "Expected one treated and one baseline value per seed. "
            f"Received: {len(treated)} treated, {len(baseline)} baseline."
        )
    return mean_interval([t - b for t, b in zip(treated, baseline)], confidence)


def gap_closed(
    student: Sequence[float],
    scratch: Sequence[float],
    teacher: Sequence[float] | float,
    confidence: float = 0.95,
) -> PairedDifference:
    """Fraction of the teacher–scratch gap the student closes, per seed, with its interval.

    `teacher` is one value per seed, or one value for a teacher shared by every seed.

    Raises:
        ValueError: in some seed the teacher is not above the scratch student (no gap to close).
    """
    teachers = _per_seed(teacher, len(scratch))
    if len(student) != len(scratch) or len(teachers) != len(scratch):
        raise ValueError("Expected one student, scratch and teacher value per seed.")
    fractions = []
    for seed, (s, b, t) in enumerate(zip(student, scratch, teachers)):
        if t <= b:
            raise ValueError(
                f"The teacher ({t:.4g}) is not above the scratch student ({b:.4g}) in seed "
                f"number {seed}, so there is no gap to close."
            )
        fractions.append((s - b) / (t - b))
    return mean_interval(fractions, confidence)


def kd_gain(
    distilled: Sequence[float],
    scratch: Sequence[float],
    teacher: Sequence[float] | float,
    confidence: float = 0.95,
) -> dict:
    """A report's KD gain: `difference` (distilled − scratch, paired by seed) and, when the
    teacher is above scratch in every seed, `gap_closed`; each a `PairedDifference.as_dict()`."""
    gain = {"difference": paired_difference(distilled, scratch, confidence).as_dict()}
    teachers = _per_seed(teacher, len(scratch))
    if all(t > b for t, b in zip(teachers, scratch)):
        gain["gap_closed"] = gap_closed(distilled, scratch, teachers, confidence).as_dict()
    return gain


def kd_gain_lines(gains: Mapping[str, Mapping]) -> list[str]:
    """A report's `kd_gain` as text, two lines per distilled student: its paired difference
    from scratch (and whether the interval lies above zero), then the gap it closes."""
    lines = []
    for label, gain in gains.items():
        difference = gain["difference"]
        lines.append(
            f"{label} − scratch, {gain['metric']}: {interval_text(difference)}; interval above "
            f"zero: {difference['low'] > 0}"
        )
        if "gap_closed" in gain:
            lines.append(f"  teacher–scratch gap closed: {interval_text(gain['gap_closed'])}")
    return lines


def _per_seed(teacher: Sequence[float] | float, seeds: int) -> list[float]:
    """One teacher value per seed: a shared teacher's value repeated, or the values given."""
    if isinstance(teacher, int | float):
        return [float(teacher)] * seeds
    return [float(t) for t in teacher]


__all__ = [
    "PairedDifference",
    "gap_closed",
    "interval_text",
    "kd_gain",
    "kd_gain_lines",
    "mean_interval",
    "paired_difference",
]
