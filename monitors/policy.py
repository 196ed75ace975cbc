"""Thresholds and verdicts: which level each score crosses, and the worst one of a run.

A threshold judges one bound of a score (`basis`): the point value (default), the low end of
its 95% interval (act only when the leak is sure: "gate only when the lower bound crosses") or
the high end (act when a leak is plausible).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SEVERITY = {"pass": 0, "warn": 1, "gate": 2, "rollback": 3}
# Not a level a score crosses: the verdict of a run whose attacker does not cover the sample
# (monitors.coverage). Acted on like `warn` (an alert), never shown as a pass.
INCONCLUSIVE = "inconclusive"
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


def is_coverage(metric: str) -> bool:
    return metric.startswith("coverage.")


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
