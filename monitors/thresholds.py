"""Thresholds: per deployment and metric, the levels `warn`, `gate`, `rollback`; versioned, with who,
when and why.

A threshold judges one bound of a score (`basis`): the point value (default), the low end of
its 95% interval (act only when the leak is sure: "gate only when the lower bound crosses") or
the high end (act when a leak is plausible). A change is a new threshold version in the ledger;
the newest version of a metric wins, the file's defaults included, until the file's own levels
change (`sync_thresholds`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import ConfigError
from monitors.config import DeploymentConfig, EmbwardenConfig
from monitors.ledger.models import AuditRun, Deployment, Threshold
from monitors.ledger.registry import CONFIG_ACTOR, get_deployment

LEVELS = ("warn", "gate", "rollback")
BASES = ("value", "ci_low", "ci_high")
# The drift check's metrics (monitors.drift) and the values they can take; probes declare theirs.
DRIFT_METRICS: dict[str, tuple[float, float | None]] = {
    "drift.model_auc": (0, 1), "drift.mmd": (0, None), "drift.norm_ks": (0, 1)}


@dataclass(frozen=True)
class Levels:
    warn: float | None = None
    gate: float | None = None
    rollback: float | None = None
    higher_is_worse: bool = True
    basis: str = "value"

    def crossed(self, value: float) -> str:
        """The most severe level `value` reaches ('pass' if none)."""
        for level in reversed(LEVELS):
            limit = getattr(self, level)
            if limit is not None and (value >= limit if self.higher_is_worse else value <= limit):
                return level
        return "pass"

    def judged(self, score) -> float:
        """The bound of `score` (anything with value, ci_low, ci_high) this threshold judges."""
        return getattr(score, self.basis)

    def problems(self) -> list[str]:
        """What is wrong with these levels, one message per field; empty when they are valid."""
        found = []
        given = []
        for level in LEVELS:
            limit = getattr(self, level)
            if limit is None:
                continue
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
                found.append(f"{level}: expected a finite number, found {limit!r}")
            else:
                given.append((level, limit))
        if not given and not found:
            found.append("set at least one of warn, gate, rollback")
        for (lo_name, lo), (hi_name, hi) in zip(given, given[1:], strict=False):
            if (self.higher_is_worse and lo > hi) or (not self.higher_is_worse and lo < hi):
                order = "<=" if self.higher_is_worse else ">="
                found.append(f"levels out of order: expected {lo_name} {order} {hi_name}, found {lo} and {hi}")
        if self.basis not in BASES:
            found.append(f"basis: expected one of {', '.join(BASES)}, found {self.basis!r}")
        return found

    @classmethod
    def from_mapping(cls, data: Mapping) -> Levels:
        return cls(warn=data.get("warn"), gate=data.get("gate"), rollback=data.get("rollback"),
                   higher_is_worse=data.get("higher_is_worse", True), basis=data.get("basis", "value"))


def all_metric_ranges() -> dict[str, tuple[float, float | None]]:
    """Every metric a run can score (probes, coverage, drift) with the range of its values."""
    from audits.coverage import METRICS as COVERAGE_METRICS
    from audits.coverage import PROBE as COVERAGE
    from audits.probes import metric_ranges

    return {**metric_ranges(), **DRIFT_METRICS, **{f"{COVERAGE}.{m}": r for m, r in COVERAGE_METRICS.items()}}


def metric_problems(metric: str, levels: Levels, probes: Iterable[str]) -> list[str]:
    """Problems of a threshold for `metric` (`probe.metric`) on a deployment running `probes`."""
    from audits.coverage import PROBE as COVERAGE

    ranges = all_metric_ranges()
    metric, segment = split_segment(metric)
    probe = metric.split(".", 1)[0]
    if metric not in ranges:
        known = sorted(m for m in ranges if m.startswith(probe + "."))
        return [f"{metric}: unknown metric; expected one of {known or sorted(ranges)}"]
    if probe not in set(probes):
        return [f"{metric}: {probe!r} does not run on this deployment"]
    if probe == COVERAGE:
        if segment is not None:
            return [f"{metric}[{segment}]: coverage is measured on the whole sample, not per segment"]
        if levels.higher_is_worse:
            return [f"{metric}: coverage is bad when low; set higher_is_worse: false"]
        if levels.gate is not None or levels.rollback is not None:
            return [f"{metric}: coverage has one level, warn (below it the verdict is inconclusive); "
                    "the gate follows on_audit_error"]
    found = [f"{metric}.{p}" for p in levels.problems()]
    low, high = ranges[metric]
    for level in LEVELS:
        limit = getattr(levels, level)
        if isinstance(limit, int | float) and not isinstance(limit, bool) and math.isfinite(limit) and (
                limit < low or (high is not None and limit > high)):
            span = f"[{low}, {high}]" if high is not None else f">= {low}"
            found.append(f"{metric}.{level}: {limit} is outside the metric's range {span}")
    return found


def split_segment(key: str) -> tuple[str, str | None]:
    """`bow_inversion.token_f1[medical]` -> (`bow_inversion.token_f1`, `medical`)."""
    if key.endswith("]") and "[" in key:
        base, segment = key[:-1].split("[", 1)
        return base, segment
    return key, None


def is_coverage(metric: str) -> bool:
    return metric.startswith("coverage.")


def sync_thresholds(session: Session, dep: Deployment, cfg: DeploymentConfig) -> None:
    """Add a new threshold version when the file's levels differ from the file's last ones.

    Levels set later by hand (CLI, API, UI) stay in force until the file's levels change.
    """
    from monitors.coverage import DEFAULT_THRESHOLDS as COVERAGE_DEFAULTS

    declared = {metric: tcfg.levels() for metric, tcfg in cfg.thresholds.items()}
    # Every deployment is judged on coverage: the file's levels, else the defaults.
    declared = {**{m: lv for m, lv in COVERAGE_DEFAULTS.items() if m not in declared}, **declared}
    for metric, levels in declared.items():
        rows = session.scalars(sa.select(Threshold).where(
            Threshold.deployment_id == dep.id, Threshold.metric == metric).order_by(Threshold.version)).all()
        last_from_file = next((r for r in reversed(rows) if r.author == CONFIG_ACTOR), None)
        if last_from_file and Levels.from_mapping(last_from_file.levels()) == levels:
            continue
        add_threshold(session, dep, metric, levels, rows[-1].version + 1 if rows else 1, CONFIG_ACTOR,
                      "default from the configuration file")


def add_threshold(session: Session, dep: Deployment, metric: str, levels: Levels, version: int, author: str,
                  reason: str) -> Threshold:
    row = Threshold(deployment_id=dep.id, metric=metric, version=version, warn=levels.warn, gate=levels.gate,
                    rollback=levels.rollback, higher_is_worse=levels.higher_is_worse, basis=levels.basis,
                    author=author, reason=reason)
    session.add(row)
    return row


def effective_thresholds(session: Session, dep: Deployment, at: datetime | None = None) -> dict[str, Levels]:
    """The newest version of each metric's thresholds (as they stood at time `at`, if given)."""
    query = sa.select(Threshold).where(Threshold.deployment_id == dep.id)
    if at is not None:
        query = query.where(Threshold.created_at <= at)
    latest: dict[str, Threshold] = {}
    for row in session.scalars(query.order_by(Threshold.metric, Threshold.version)):
        latest[row.metric] = row
    return {metric: Levels.from_mapping(row.levels()) for metric, row in latest.items()}


class ThresholdError(ConfigError):
    """A threshold change that was refused; the message names the field."""


@dataclass(frozen=True)
class ThresholdChange:
    deployment: str
    metric: str
    version: int
    old: dict | None
    new: dict
    author: str
    reason: str
    created_at: datetime


LEVEL_FIELDS = ("warn", "gate", "rollback", "higher_is_worse", "basis")


def set_threshold(session: Session, config: EmbwardenConfig, deployment: str, metric: str,
                  changes: Mapping[str, Any], author: str, reason: str) -> ThresholdChange:
    """Store a new version of `metric`'s thresholds, or refuse it, saying why.

    `changes` names the fields to change (warn, gate, rollback, higher_is_worse, basis); a field not
    named keeps the value in force, and a level set to None is removed. Setting `warn` alone
    therefore never drops `gate` and `rollback` behind the user's back.
    """
    if not reason or not reason.strip():
        raise ThresholdError("reason: a reason is required for a threshold change")
    if not author or not author.strip():
        raise ThresholdError("author: who changes the threshold must be given")
    unknown = sorted(set(changes) - set(LEVEL_FIELDS))
    if unknown or not changes:
        raise ThresholdError(f"levels: name at least one of {', '.join(LEVEL_FIELDS)} to change"
                             + (f"; {unknown} are not levels" if unknown else ""))
    if "higher_is_worse" in changes and not isinstance(changes["higher_is_worse"], bool):
        raise ThresholdError(f"higher_is_worse: expected true or false, found {changes['higher_is_worse']!r}")
    dep = get_deployment(session, deployment)
    current = effective_thresholds(session, dep).get(metric)
    base = _levels_dict(current) if current else {"warn": None, "gate": None, "rollback": None,
                                                  "higher_is_worse": not is_coverage(metric), "basis": "value"}
    levels = Levels(**{**base, **changes})
    problems = metric_problems(metric, levels, config.deployment(deployment).checks())
    if problems:
        kept = [f"{k}={base[k]}" for k in ("warn", "gate", "rollback") if k not in changes and base[k] is not None]
        hint = f" (kept as in force: {', '.join(kept)}; name a level to change it, null to remove it)" if kept else ""
        raise ThresholdError("; ".join(problems) + hint)
    last = session.scalar(sa.select(Threshold).where(Threshold.deployment_id == dep.id, Threshold.metric == metric)
                          .order_by(Threshold.version.desc()).limit(1))
    row = add_threshold(session, dep, metric, levels, last.version + 1 if last else 1, author.strip(),
                        reason.strip())
    session.flush()
    return _change(deployment, row, last)


def history(session: Session, deployment: str, metric: str | None = None) -> list[ThresholdChange]:
    """Every threshold version of the deployment (or of one metric), oldest first, with the old levels."""
    dep = get_deployment(session, deployment)
    query = sa.select(Threshold).where(Threshold.deployment_id == dep.id)
    if metric:
        query = query.where(Threshold.metric == metric)
    changes: list[ThresholdChange] = []
    previous: dict[str, Threshold] = {}
    for row in session.scalars(query.order_by(Threshold.metric, Threshold.version)):
        changes.append(_change(deployment, row, previous.get(row.metric)))
        previous[row.metric] = row
    return sorted(changes, key=lambda c: (c.created_at, c.metric, c.version))


def effective(session: Session, deployment: str, audit_run_id: int | None = None) -> dict[str, dict]:
    """The thresholds in force now, or those a past audit run was judged with."""
    if audit_run_id is None:
        dep = get_deployment(session, deployment)
        return {metric: _levels_dict(levels) for metric, levels in effective_thresholds(session, dep).items()}
    run = session.get(AuditRun, audit_run_id)
    if run is None or run.deployment.name != deployment:
        raise ThresholdError(f"audit run {audit_run_id}: no such run of deployment {deployment!r}")
    if run.thresholds is None:
        # Not judged (it stopped earlier): the thresholds that stood when it started.
        return {m: _levels_dict(v) for m, v in effective_thresholds(session, run.deployment, run.started_at).items()}
    return dict(run.thresholds)


def _levels_dict(levels: Levels) -> dict:
    return {"warn": levels.warn, "gate": levels.gate, "rollback": levels.rollback,
            "higher_is_worse": levels.higher_is_worse, "basis": levels.basis}


def _change(deployment: str, row: Threshold, previous: Threshold | None) -> ThresholdChange:
    strip = lambda levels: {k: v for k, v in levels.items() if k != "version"}  # noqa: E731
    return ThresholdChange(deployment, row.metric, row.version, strip(previous.levels()) if previous else None,
                           strip(row.levels()), row.author, row.reason, row.created_at)
