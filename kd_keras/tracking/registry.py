"""Model registry: TFLite students as versions, `challenger`/`champion` aliases, promotion gates.

Promotion compares the challenger with whatever version holds `champion` when it starts (also
after someone moved the alias by hand, e.g. a rollback) on one run metric and checks the
deployment gates (size, latency, LiteRT parity). A version that passes is tagged approved; the
`champion` alias is then settled with a read-after-write loop among the *contenders*: approved
versions whose promotion had not finished when this one started (it finishes when it writes its
`kd_keras.promotion.decision` tag), so approvals from earlier promotions, such as a version
rolled back from, no longer compete:

    repeat: best = best contender (metric, then newest); read champion
            if champion == best: stop
            if champion is neither the one read at the start nor a contender: stop (moved by
                someone else meanwhile, e.g. by hand; not overwritten)
            set champion = best

A process stops only after reading `champion == best` after its own last write, and every
concurrent promoter approves before it reads, so when two promotions race the last write is the
better model: `champion` never ends on the worse one (with any store that serializes writes:
SQLite, or one `mlflow server`). A concurrent promotion is reported only when the alias changed
after this promotion read it. To withdraw a version from promotion, delete its
`kd_keras.promotion.approved` tag.
"""

from __future__ import annotations

import dataclasses
import time

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from kd_keras.pipeline.reporting import format_table
from kd_keras.tracking import _store

CHAMPION = "champion"
CHALLENGER = "challenger"
APPROVED = "kd_keras.promotion.approved"
SIZE_METRIC = "tflite_size_kb"
LATENCY_METRIC = "tflite_latency_ms"
PARITY_METRIC = "tflite_parity"
DECISION = "kd_keras.promotion.decision"
PROBE_TIMEOUT = 3.0
"""Seconds to wait for a tracking server's answer before `promote` gives up on it."""


def register_version(
    client: MlflowClient, name: str, run_id: str, artifact_path: str, tags: dict
) -> str:
    """Registers `runs:/<run_id>/<artifact_path>` as a new version of `name`, alias `challenger`.

    Returns:
        The new version number (a string, as MLflow gives it).
    """
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    version = client.create_model_version(
        name,
        f"runs:/{run_id}/{artifact_path}",
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


@dataclasses.dataclass(frozen=True)
class Gates:
    """Promotion conditions; `None` turns a gate off.

    Attributes:
        min_delta: the challenger must beat the champion by more than this (0: strictly better;
            negative: may be slightly worse, e.g. when other gates matter more).
        max_size_kb: largest `.tflite` (`tflite_size_kb`).
        max_latency_ms: slowest LiteRT latency (`tflite_latency_ms`).
        min_parity: lowest Keras/LiteRT agreement (`tflite_parity`).
    """

    min_delta: float = 0.0
    max_size_kb: float | None = None
    max_latency_ms: float | None = None
    min_parity: float | None = None


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    champion: float | None
    challenger: float | None
    rule: str
    passed: bool
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """What `promote` did and why.

    Attributes:
        promoted: the challenger is now `champion`.
        reasons: why not (empty when promoted).
        champion_after: the `champion` version when `promote` returned.
    """

    model: str
    metric: str
    challenger_version: str
    champion_version: str | None
    checks: tuple[Check, ...]
    promoted: bool
    reasons: tuple[str, ...]
    champion_after: str | None

    def table(self) -> str:
        """The comparison as an aligned table plus the outcome."""
        rows = [
            {
                "check": c.name,
                "champion": _fmt(c.champion) if self.champion_version else "-",
                "challenger": _fmt(c.challenger),
                "rule": c.rule,
                "result": "pass" if c.passed else "FAIL",
            }
            for c in self.checks
        ]
        champion = f"champion v{self.champion_version}" if self.champion_version else "champion"
        columns = [
            ("check", "check", ""),
            ("champion", champion, ""),
            ("challenger", f"challenger v{self.challenger_version}", ""),
            ("rule", "rule", ""),
            ("result", "result", ""),
        ]
        head = f"{self.model}: challenger v{self.challenger_version} vs " + (
            f"champion v{self.champion_version}" if self.champion_version else "no champion yet"
        )
        if self.promoted:
            outcome = f"PROMOTED: champion -> v{self.challenger_version}"
        else:
            outcome = "NOT PROMOTED: " + "; ".join(self.reasons)
        return f"{head}\n\n{format_table(rows, columns)}\n\n{outcome}"


def promote(
    model: str,
    metric: str,
    *,
    tracking_uri: str,
    gates: Gates = Gates(),
    version: str | None = None,
    higher_is_better: bool = True,
    max_rounds: int = 50,
) -> PromotionDecision:
    """Moves `champion` to the challenger if it beats the champion on `metric` and passes gates.

    Values are the metrics of each version's run. A missing metric or gate value refuses the
    promotion. The decision and its reasons are recorded as tags on the challenger version
    (`kd_keras.promotion.decision`, `.reasons`, `.metric`, `.compared_to`, `.time`).

    Args:
        model: registered model name.
        metric: run metric to compare, e.g. `tflite_accuracy`.
        tracking_uri: the store holding the registry.
        gates: `Gates` thresholds.
        version: the version to consider (default: the one with alias `challenger`).
        higher_is_better: False for metrics like loss or error.
        max_rounds: bound on the champion settling loop.

    Raises:
        ValueError: no such version or no `challenger` alias.
        TrackingError: the tracking server does not answer within `PROBE_TIMEOUT` seconds, or
            the champion kept changing for `max_rounds` rounds.
    """
    problem = _store.reachable(tracking_uri, PROBE_TIMEOUT)
    if problem is not None:
        raise _store.TrackingError(
            f"The tracking server at {tracking_uri} did not answer ({problem}). Start it "
            "(`mlflow server ...`) or pass the right --tracking-uri / MLFLOW_TRACKING_URI. "
            f"Received: tracking_uri={tracking_uri!r}."
        )
    client = _store.LockRetryingClient(MlflowClient(tracking_uri=tracking_uri))
    finished = _finished_approvals(client, model)
    challenger = _version(client, model, version) if version else _alias(client, model, CHALLENGER)
    if challenger is None:
        wanted = f"version {version}" if version else "version with alias 'challenger'"
        raise ValueError(
            f"Model {model!r} has no {wanted}. Register one first (a recipe run with "
            "register_as) or pass --version. "
            f"Received: model={model!r}, version={version!r}."
        )
    champion = _alias(client, model, CHAMPION)
    challenger_version = str(challenger.version)
    champion_version = None if champion is None else str(champion.version)
    sign = 1.0 if higher_is_better else -1.0
    checks = _checks(client, metric, gates, sign, challenger, champion)
    reasons = [c.reason for c in checks if not c.passed]
    if champion_version == challenger_version:
        reasons.insert(0, f"version {challenger_version} is already champion")
    champion_after = champion_version
    if not reasons:
        # A decision left by an earlier attempt would mark this new approval as finished.
        if DECISION in challenger.tags:
            client.delete_model_version_tag(model, challenger_version, DECISION)
        client.set_model_version_tag(model, challenger_version, APPROVED, metric)
        finished.discard(challenger_version)
        champion_after, contenders = _settle(
            client, model, metric, sign, champion_version, finished, max_rounds
        )
        if champion_after in contenders and champion_after != challenger_version:
            reasons.append(
                f"passed, but version {champion_after} is better on {metric} and is champion "
                "(promoted concurrently)"
            )
        elif champion_after != challenger_version:
            moved_to = "no version" if champion_after is None else f"version {champion_after}"
            reasons.append(
                f"passed, but champion moved from version {champion_version} to {moved_to} "
                "during this promotion; rerun it to compare with the new champion"
            )
    decision = PromotionDecision(
        model=model,
        metric=metric,
        challenger_version=challenger_version,
        champion_version=champion_version,
        checks=tuple(checks),
        promoted=not reasons,
        reasons=tuple(reasons),
        champion_after=champion_after,
    )
    # Once `decision` is written, later promotions no longer count this approval as a contender.
    tags = {
        "decision": "promoted" if decision.promoted else "refused",
        "reasons": "; ".join(reasons) or "all checks passed",
        "metric": metric,
        "compared_to": decision.champion_version or "none",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for key, value in tags.items():
        client.set_model_version_tag(model, challenger_version, f"kd_keras.promotion.{key}", value)
    return decision


def _checks(client, metric, gates: Gates, sign, challenger, champion) -> list[Check]:
    new = _metrics(client, challenger)
    old = _metrics(client, champion) if champion is not None else {}
    value, reference = new.get(metric), old.get(metric)
    checks = []
    if value is None:
        checks.append(_missing(metric, reference, value, "challenger", challenger.version))
    elif champion is None:
        checks.append(Check(metric, None, value, "no champion yet", True))
    elif reference is None:
        checks.append(_missing(metric, reference, value, "champion", champion.version))
    else:
        better = ">" if sign > 0 else "<"
        rule = f"{better} champion {'+' if sign > 0 else '-'} {gates.min_delta:g}"
        passed = sign * (value - reference) > gates.min_delta
        reason = None if passed else f"{metric} {_fmt(value)} is not {rule} ({_fmt(reference)})"
        checks.append(Check(metric, reference, value, rule, passed, reason))
    for name, limit, upper in (
        (SIZE_METRIC, gates.max_size_kb, True),
        (LATENCY_METRIC, gates.max_latency_ms, True),
        (PARITY_METRIC, gates.min_parity, False),
    ):
        if limit is None:
            continue
        gate_value = new.get(name)
        rule = f"{'<=' if upper else '>='} {limit:g}"
        if gate_value is None:
            checks.append(_missing(name, old.get(name), None, "challenger", challenger.version))
            continue
        passed = gate_value <= limit if upper else gate_value >= limit
        reason = None if passed else f"{name} {_fmt(gate_value)} is not {rule}"
        checks.append(Check(name, old.get(name), gate_value, rule, passed, reason))
    return checks


def _missing(name, reference, value, role, version) -> Check:
    reason = f"{role} version {version} has no {name} metric"
    return Check(name, reference, value, "must be recorded", False, reason)


def _settle(
    client: MlflowClient,
    model: str,
    metric: str,
    sign: float,
    start: str | None,
    finished: set[str],
    rounds: int,
) -> tuple[str | None, set[str]]:
    """Sets `champion` to the best contender until a read after the last write agrees.

    Args:
        start: the champion read when the promotion started.
        finished: approved versions whose promotion had finished by then (not contenders).

    Returns:
        The champion when the loop stopped, and the contenders of the last round.
    """
    for _ in range(rounds):
        ranked = _contenders(client, model, metric, sign, finished)
        best = str(max(ranked)[1])
        contenders = {str(number) for _, number in ranked}
        current = _alias(client, model, CHAMPION)
        current_version = None if current is None else str(current.version)
        if current_version == best:
            return best, contenders
        if current_version != start and current_version not in contenders:
            return current_version, contenders
        client.set_registered_model_alias(model, CHAMPION, best)
    raise _store.TrackingError(
        f"The champion of {model!r} kept changing for {rounds} rounds; rerun the promotion."
    )


def _contenders(
    client: MlflowClient, model: str, metric: str, sign: float, finished: set[str]
) -> list[tuple[float, int]]:
    """`(sign * metric, version)` of the versions approved on `metric`, except `finished`."""
    ranked = []
    for version in _all_versions(client, model):
        if version.tags.get(APPROVED) != metric or str(version.version) in finished:
            continue
        value = _metrics(client, version).get(metric)
        if value is not None:
            ranked.append((sign * value, int(version.version)))
    return ranked


def _finished_approvals(client: MlflowClient, model: str) -> set[str]:
    """Approved versions whose promotion already wrote its decision."""
    versions = _all_versions(client, model)
    return {str(v.version) for v in versions if APPROVED in v.tags and DECISION in v.tags}


def _all_versions(client: MlflowClient, model: str) -> list:
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name='{model}'", max_results=200, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _metrics(client: MlflowClient, version) -> dict[str, float]:
    if version is None or not version.run_id:
        return {}
    return dict(client.get_run(version.run_id).data.metrics)


def _alias(client: MlflowClient, model: str, alias: str):
    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def _version(client: MlflowClient, model: str, version: str):
    try:
        return client.get_model_version(model, str(version))
    except MlflowException:
        return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
