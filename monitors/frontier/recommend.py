"""Judging a frontier's points against the gates, and recommending one (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from audits.results import Score
from monitors.frontier.grid import strength_rank, version_command, version_name
from monitors.frontier.results import BLOCKING, FrontierPoint, K, Recommendation
from monitors.thresholds import Levels


def judge(scores: Mapping[str, Score], thresholds: Mapping[str, Levels],
          probes: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
    """Whether no score reaches a gate or rollback level; the crossed thresholds otherwise.

    A threshold of a probe the sweep ran whose score is missing (the probe failed) fails the
    point: it cannot be shown to pass. Thresholds of other checks (drift, skipped probes) are
    not judged here.
    """
    failed = []
    for metric, levels in sorted(thresholds.items()):
        if metric.split(".", 1)[0] not in probes or all(getattr(levels, lv) is None for lv in BLOCKING):
            continue
        score = scores.get(metric)
        if score is None:
            failed.append(f"{metric}: not measured (its probe failed)")
            continue
        level = levels.crossed(levels.judged(score))
        if level in BLOCKING:
            failed.append(f"{metric}: {levels.basis} {levels.judged(score):.3f} reaches {level} "
                          f"{getattr(levels, level):g}")
    return not failed, tuple(failed)


def recommend(points: Sequence[FrontierPoint], kind: str, deployment: str, existing_versions: Sequence[str] = (),
              from_version: str | None = None, config_path: str | None = None) -> Recommendation:
    """Among the grid's points that pass every gate, the one with the smallest utility loss; on a tie
    the weakest transform. None passes: no recommendation, and the message says how far the
    strongest point tried is from passing."""
    tried = [p for p in points if not p.baseline]
    baseline = next((p for p in points if p.baseline), None)
    passing = [p for p in tried if p.passes_gates]
    if not tried:
        return Recommendation("No transform was tried.")
    if not passing:
        strongest = max(tried, key=lambda p: strength_rank(p, kind))
        return Recommendation(
            f"No transform of the grid passes the gates: even the strongest tried, {strongest.label} "
            f"(recall@{K} {strongest.utility.recall:.3f}), crosses "
            f"{'; '.join(strongest.failed) or 'a gate'}. Nothing is recommended: sweep stronger settings, "
            "or review the thresholds.")
    best = min(passing, key=lambda p: (round(p.utility_loss, 9), strength_rank(p, kind)))
    name = version_name(kind, best.transform, existing_versions)
    note = ""
    if baseline is not None and baseline.passes_gates:
        note = (" Without any transform the scores already pass the gates: a transform is not required by the "
                "thresholds, only chosen for margin.")
    without = best.utility.recall + best.utility_loss
    message = (f"{best.label}: it passes every gate, with the smallest loss of retrieval recall@{K} "
               f"({best.utility_loss:+.3f}: {best.utility.recall:.3f} against {without:.3f} without a transform) "
               f"of the {len(passing)} passing point{'s' if len(passing) != 1 else ''} of {len(tried)}.{note}")
    return Recommendation(message, best.label, dict(best.transform), name,
                          version_command(deployment, name, best.transform, from_version, config_path),
                          best.utility_loss)
