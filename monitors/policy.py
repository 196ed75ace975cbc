"""Thresholds and verdicts: which level each score crosses, and the worst one of a run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SEVERITY = {"pass": 0, "warn": 1, "gate": 2, "rollback": 3}
LEVELS = ("warn", "gate", "rollback")


@dataclass(frozen=True)
class Levels:
    warn: float | None = None
    gate: float | None = None
    rollback: float | None = None
    higher_is_worse: bool = True

    def crossed(self, value: float) -> str:
        """The most severe level `value` reaches ('pass' if none)."""
        for level in reversed(LEVELS):
            limit = getattr(self, level)
            if limit is not None and (value >= limit if self.higher_is_worse else value <= limit):
                return level
        return "pass"

    @classmethod
    def from_mapping(cls, data: Mapping) -> Levels:
        return cls(warn=data.get("warn"), gate=data.get("gate"), rollback=data.get("rollback"),
                   higher_is_worse=data.get("higher_is_worse", True))


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

    @property
    def worst(self) -> Finding | None:
        crossed = [f for f in self.findings if f.level != "pass"]
        return max(crossed, key=lambda f: SEVERITY[f.level]) if crossed else None


def evaluate(scores: Iterable, thresholds: Mapping[str, Levels]) -> Verdict:
    """Set each score (anything with key, value, ci_low, ci_high) against its metric's levels."""
    findings = []
    for score in scores:
        levels = thresholds.get(score.key)
        level = levels.crossed(score.value) if levels else "pass"
        findings.append(Finding(score.key, score.value, score.ci_low, score.ci_high, level, levels))
    verdict = max((f.level for f in findings), key=SEVERITY.__getitem__, default="pass")
    return Verdict(verdict, tuple(findings))
