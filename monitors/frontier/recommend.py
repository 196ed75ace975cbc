"""Judging a frontier's points against the gates, and recommending one (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from audits.results import Score
from monitors.frontier.grid import kind_rank, strength_rank, version_command, version_name
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


def recommend(points: Sequence[FrontierPoint], kind: str | Sequence[str], deployment: str,
              existing_versions: Sequence[str] = (), from_version: str | None = None,
              config_path: str | None = None) -> Recommendation:
    """Among the grid's points that pass every gate, the one with the smallest utility loss, whatever
    its kind; on a tie the weakest transform of a kind, and between kinds the first in KINDS' order.
    None passes: no recommendation, and the message says how far the strongest point tried (of each
    kind) is from passing. `kind`: the kind swept, or the kinds."""
    kinds = [kind] if isinstance(kind, str) else list(kind)
    tried = [p for p in points if not p.baseline]
    baseline = next((p for p in points if p.baseline), None)
    passing = [p for p in tried if p.passes_gates]
    if not tried:
        return Recommendation("No transform was tried.")
    if not passing:
        strongest = [max(of, key=strength_rank) for k in sorted({p.kind for p in tried}, key=kind_rank)
                     if (of := [p for p in tried if p.kind == k])]
        named = "; ".join(f"{p.label} (recall@{K} {p.utility.recall:.3f}), crosses {'; '.join(p.failed) or 'a gate'}"
                          for p in strongest)
        lead = "even the strongest tried" if len(strongest) == 1 else "even the strongest tried of each kind"
        return Recommendation(
            f"No transform of the grid passes the gates: {lead}, {named}. Nothing is recommended: sweep stronger "
            "settings, or review the thresholds.")
    best = min(passing, key=lambda p: (round(p.utility_loss, 9), kind_rank(p.kind), strength_rank(p)))
    name = version_name(best.kind, best.transform, existing_versions)
    note = ""
    if baseline is not None and baseline.passes_gates:
        note = (" Without any transform the scores already pass the gates: a transform is not required by the "
                "thresholds, only chosen for margin.")
    swept = sorted({p.kind for p in tried} | set(kinds), key=kind_rank)
    across = f" across {len(swept)} kinds ({', '.join(swept)}); the best is of kind {best.kind}" \
        if len(swept) > 1 else ""
    without = best.utility.recall + best.utility_loss
    message = (f"{best.label}: it passes every gate, with the smallest loss of retrieval recall@{K} "
               f"({best.utility_loss:+.3f}: {best.utility.recall:.3f} against {without:.3f} without a transform) "
               f"of the {len(passing)} passing point{'s' if len(passing) != 1 else ''} of {len(tried)}{across}."
               f"{note}")
    return Recommendation(message, best.label, dict(best.transform), name,
                          version_command(deployment, name, best.transform, from_version, config_path),
                          best.utility_loss, best.kind)
