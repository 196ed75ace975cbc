"""Leakage trends: a metric rising over the last audits earns a warning before it crosses a line.

Mann-Kendall's test (Kendall's tau of the values against their order, one-sided): robust to the
size of the steps and to outliers, and meaningful from five runs on. Only runs that succeeded
count: an invalid sample's scores never enter a trend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from monitors.ledger.models import AuditRun, Score
from monitors.thresholds import Levels, is_coverage

MIN_RUNS = 5
WINDOW = 8
ALPHA = 0.05


@dataclass(frozen=True)
class Trend:
    metric: str
    values: tuple[float, ...]    # oldest first, the current run last
    tau: float
    p: float                     # one-sided: the chance of a rise this steady without a real one
    level: str = "warn"

    def describe(self) -> str:
        return (f"{self.metric} rising over the last {len(self.values)} audits "
                f"(Kendall tau {self.tau:.2f}, p {self.p:.3f}), still below its thresholds")

    def to_json(self) -> dict:
        return {**asdict(self), "values": list(self.values)}


def rising(values: Sequence[float], higher_is_worse: bool = True) -> tuple[float, float] | None:
    """(tau, one-sided p) when the series moves the worse way significantly, else None."""
    from scipy.stats import kendalltau

    if len(values) < MIN_RUNS or len(set(values)) < 2:
        return None
    series = list(values) if higher_is_worse else [-v for v in values]
    result = kendalltau(range(len(series)), series, alternative="greater")
    return (float(result.statistic), float(result.pvalue)) if result.pvalue < ALPHA else None


def trends_of(session: Session, run: AuditRun, thresholds: dict[str, Levels], levels: dict[str, str]) -> list[Trend]:
    """Metrics of `run` that pass their thresholds but rise over this version's last audits."""
    earlier = (sa.select(AuditRun.id).where(AuditRun.deployment_id == run.deployment_id,
                                            AuditRun.version_id == run.version_id, AuditRun.id < run.id,
                                            AuditRun.dag_id == run.dag_id,
                                            AuditRun.status == "succeeded")
               .order_by(AuditRun.id.desc()).limit(WINDOW - 1).subquery())
    history: dict[str, list[tuple[int, float]]] = {}
    for audit_run_id, probe, metric, value in session.execute(
            sa.select(Score.audit_run_id, Score.probe, Score.metric, Score.value)
            .where(Score.audit_run_id.in_(sa.select(earlier.c.id)))):
        history.setdefault(f"{probe}.{metric}", []).append((audit_run_id, value))
    found = []
    for score in run.scores:
        levels_of = thresholds.get(score.key)
        if levels_of is None or levels.get(score.key, "pass") != "pass" or is_coverage(score.key):
            continue   # coverage judges the attacker, not the pipeline: its drift is no leakage trend
        values = [v for _, v in sorted(history.get(score.key, []))] + [score.value]
        hit = rising(values, levels_of.higher_is_worse)
        if hit:
            found.append(Trend(score.key, tuple(values), *hit))
    return found
