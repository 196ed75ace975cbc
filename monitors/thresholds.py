"""Changing thresholds after the configuration file: validated, versioned, with who, when and why.

A change is a new threshold version in the ledger; the newest version of a metric wins, the
file's defaults included, until the file's own levels change. The CLI uses these functions now,
the plugin's API and pages later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import ConfigError
from monitors.config import EmbwardenConfig
from monitors.ledger import AuditRun, Threshold
from monitors.policy import Levels, is_coverage, metric_problems
from monitors.registry import add_threshold, effective_thresholds, get_deployment


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
    changes, previous = [], {}
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
