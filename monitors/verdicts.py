"""Verdicts: the level each score crosses, and the worst one of a run.

`pass` < `warn` < `gate` < `rollback` for leakage; `inconclusive` when the attacker does not cover
the sample (monitors.coverage) and no leak already reaches `gate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from monitors.ledger.models import AuditRun
from monitors.thresholds import Levels, is_coverage

SEVERITY = {"pass": 0, "warn": 1, "gate": 2, "rollback": 3}
# Not a level a score crosses: the verdict of a run whose attacker does not cover the sample
# (monitors.coverage). Acted on like `warn` (an alert), never shown as a pass.
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Finding:
    """One score set against its thresholds."""

    metric: str
    value: float
    ci_low: float
    ci_high: float
    level: str
    levels: Levels | None


@dataclass(frozen=True)
class Verdict:
    verdict: str
    findings: tuple[Finding, ...]
    # Whether the attacker's corpus covers the sample (None: no coverage score was judged).
    covered: bool | None = None

    @property
    def worst(self) -> Finding | None:
        crossed = [f for f in self.findings if f.level != "pass" and not is_coverage(f.metric)]
        return max(crossed, key=lambda f: SEVERITY[f.level]) if crossed else None

    @property
    def uncovered(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if is_coverage(f.metric) and f.level != "pass")


def evaluate(scores: Iterable, thresholds: Mapping[str, Levels]) -> Verdict:
    """Set each score (anything with key, value, ci_low, ci_high) against its metric's levels.

    Leakage scores give the verdict; coverage scores below their level make a verdict that is not
    yet `gate` or `rollback` `inconclusive`: a weak attacker's low score proves nothing, while a
    strong leak found even by a weak attacker is real.
    """
    findings = []
    for score in scores:
        levels = thresholds.get(score.key)
        level = levels.crossed(levels.judged(score)) if levels else "pass"
        findings.append(Finding(score.key, score.value, score.ci_low, score.ci_high, level, levels))
    leak = max((f.level for f in findings if not is_coverage(f.metric)), key=SEVERITY.__getitem__, default="pass")
    judged = [f for f in findings if is_coverage(f.metric) and f.levels is not None]
    covered = None if not judged else all(f.level == "pass" for f in judged)
    verdict = INCONCLUSIVE if covered is False and SEVERITY[leak] < SEVERITY["gate"] else leak
    return Verdict(verdict, tuple(findings), covered)


def level_of(run: AuditRun) -> str:
    if run.verdict is not None:
        return run.verdict
    return "error"


def worst_crossing(run: AuditRun) -> tuple[str | None, float | None, float | None]:
    """The metric, value and limit behind the verdict, for the alert and the gate's reason."""
    if run.verdict == INCONCLUSIVE:
        for score in run.scores:
            levels = (run.thresholds or {}).get(score.key)
            if is_coverage(score.key) and levels and levels.get("warn") is not None:
                judged = Levels.from_mapping(levels)
                if judged.crossed(judged.judged(score)) != "pass":
                    return score.key, judged.judged(score), levels["warn"]
        return None, None, None
    if run.verdict not in SEVERITY or run.verdict == "pass":
        return None, None, None
    for score in run.scores:
        levels = (run.thresholds or {}).get(score.key)
        if levels:
            judged = Levels.from_mapping(levels)
            if judged.crossed(judged.judged(score)) == run.verdict:
                return score.key, judged.judged(score), levels[run.verdict]
    return None, None, None


# Levels at which the audit could not judge the pipeline: the policy (on_audit_error) decides the gate,
# and the DAG run fails.
UNJUDGED = ("inconclusive", "invalid", "error")
