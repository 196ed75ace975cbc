from dataclasses import dataclass

from monitors.thresholds import Levels
from monitors.verdicts import evaluate


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


def test_a_threshold_judges_the_bound_it_names():
    """'Gate only when the lower bound crosses': a noisy score near the line does not act."""
    score = S("p.a", 0.52, ci_low=0.44, ci_high=0.60)
    assert evaluate([score], {"p.a": Levels(gate=0.5)}).verdict == "gate"
    assert evaluate([score], {"p.a": Levels(gate=0.5, basis="ci_low")}).verdict == "pass"
    assert evaluate([score], {"p.a": Levels(rollback=0.58, basis="ci_high")}).verdict == "rollback"
    assert evaluate([score], {"p.a": Levels(gate=0.45, higher_is_worse=False, basis="ci_low")}).verdict == "gate"


def test_invalid_levels_say_which_field():
    from monitors.thresholds import metric_problems

    assert Levels(warn=0.6, gate=0.5).problems() == [
        "levels out of order: expected warn <= gate, found 0.6 and 0.5"]
    assert Levels(gate=float("nan")).problems()[0] == "gate: expected a finite number, found nan"
    assert Levels(warn="high").problems()[0] == "warn: expected a finite number, found 'high'"
    assert Levels().problems() == ["set at least one of warn, gate, rollback"]
    probes = ["bow_inversion"]
    assert metric_problems("bow_inversion.token_f1", Levels(gate=1.2), probes) == [
        "bow_inversion.token_f1.gate: 1.2 is outside the metric's range [0, 1]"]
    assert metric_problems("bow_inversion.f1", Levels(gate=0.5), probes)[0].startswith(
        "bow_inversion.f1: unknown metric; expected one of ['bow_inversion.secret_recovery'")
    assert metric_problems("candidate_inversion.top1", Levels(gate=0.5), probes) == [
        "candidate_inversion.top1: 'candidate_inversion' does not run on this deployment"]
    assert metric_problems("candidate_inversion.exposure_bits", Levels(gate=40), ["candidate_inversion"]) == []


def test_an_attacker_that_does_not_cover_the_sample_makes_the_run_inconclusive_never_a_pass():
    from monitors.coverage import DEFAULT_THRESHOLDS

    thresholds = {"p.a": Levels(warn=0.4, gate=0.5), **DEFAULT_THRESHOLDS}
    low = [S("coverage.embedding", 0.02), S("coverage.vocabulary", 0.9)]
    high = [S("coverage.embedding", 0.8), S("coverage.vocabulary", 0.9)]
    assert evaluate([S("p.a", 0.01), *low], thresholds).verdict == "inconclusive"
    assert evaluate([S("p.a", 0.45), *low], thresholds).verdict == "inconclusive"   # a warn that may be worse
    assert evaluate([S("p.a", 0.6), *low], thresholds).verdict == "gate"            # a weak attacker's leak is real
    covered = evaluate([S("p.a", 0.01), *high], thresholds)
    assert (covered.verdict, covered.covered) == ("pass", True)
    uncovered = evaluate([S("p.a", 0.01), *low], thresholds)
    assert [f.metric for f in uncovered.uncovered] == ["coverage.embedding"] and uncovered.worst is None
    assert evaluate([S("p.a", 0.01), *low], {"p.a": Levels(warn=0.4)}).covered is None   # no coverage levels


def test_coverage_and_segment_thresholds_are_checked_like_any_other():
    from monitors.thresholds import metric_problems, split_segment

    checks = ["bow_inversion", "coverage"]
    assert metric_problems("coverage.embedding", Levels(warn=0.3, higher_is_worse=False), checks) == []
    assert "set higher_is_worse: false" in metric_problems("coverage.embedding", Levels(warn=0.3), checks)[0]
    assert "one level, warn" in metric_problems("coverage.vocabulary",
                                                Levels(gate=0.3, higher_is_worse=False), checks)[0]
    assert metric_problems("bow_inversion.token_f1[medical]", Levels(gate=0.5), checks) == []
    assert "outside the metric's range" in metric_problems("bow_inversion.token_f1[hr]", Levels(gate=5), checks)[0]
    assert split_segment("bow_inversion.token_f1[medical]") == ("bow_inversion.token_f1", "medical")
