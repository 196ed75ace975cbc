"""The body of the privacy_frontier task (dags/privacy_frontier.py): sweep, write the artifacts,
return references only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from audits.errors import EmbwardenError
from monitors.tasks.common import no_retry


def run_sweep(deployment: str, kind: str | Sequence[str] | None,
              strengths: Sequence[float] | Mapping[str, Sequence[float]] | None, pairs: int, run_id: str) -> dict:
    """The privacy_frontier DAG's task: sweep, write the artifacts, return references only.

    `kind`: one kind, several (a list, or comma-separated), or `all`; `strengths`: a list for one
    kind, or a mapping from kind to its list. Bad params or configuration fail once (no retry); an
    unreachable ledger only changes where the thresholds come from.
    """
    from monitors.frontier.measure import sweep_and_write  # torch, probes: only when the task runs

    if isinstance(strengths, Mapping):
        strengths = {k: list(v) if isinstance(v, list | tuple) else v for k, v in strengths.items()}
    elif strengths:
        strengths = list(strengths)
    try:
        frontier, json_path, html_path = sweep_and_write(deployment, kind, strengths or None, pairs, run_id)
    except EmbwardenError as exc:
        raise no_retry(exc) from exc
    rec = frontier.recommendation
    return {"deployment": deployment, "kind": frontier.kind, "points": len(frontier.grid),
            "passing": sum(p.passes_gates for p in frontier.grid), "json": str(json_path), "html": str(html_path),
            "recommendation": rec.label, "version": rec.version, "command": rec.command}
