from dataclasses import dataclass

from monitors.policy import Levels, evaluate


@dataclass
class S:
    key: str
    value: float
    ci_low: float = 0.0
    ci_high: float = 1.0


def test_levels_higher_is_worse():
    levels = Levels(warn=0.3, gate=0.5, rollback=0.7)
    assert [levels.crossed(v) for v in (0.1, 0.3, 0.6, 0.7, 0.99)] == ["pass", "warn", "gate", "rollback", "rollback"]


def test_levels_lower_is_worse_and_subsets():
    assert Levels(gate=0.6, higher_is_worse=False).crossed(0.5) == "gate"
    assert Levels(gate=0.6, higher_is_worse=False).crossed(0.7) == "pass"
    assert Levels(warn=0.2).crossed(0.9) == "warn"


def test_verdict_is_the_worst_level_and_unthresholded_metrics_pass():
    thresholds = {"p.a": Levels(warn=0.5), "p.b": Levels(gate=0.2, rollback=0.9)}
    verdict = evaluate([S("p.a", 0.6), S("p.b", 0.4), S("p.c", 1.0)], thresholds)
    assert verdict.verdict == "gate"
    assert verdict.worst.metric == "p.b"
    assert evaluate([S("p.c", 1.0)], thresholds).verdict == "pass"
    assert evaluate([], thresholds).verdict == "pass"
