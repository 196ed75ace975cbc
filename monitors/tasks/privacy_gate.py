"""The body of the privacy_gate task (dags/privacy_gate.py): a change by hand, recorded like any other action."""

from __future__ import annotations

import logging

from audits.errors import EmbwardenError
from monitors.config import load_config
from monitors.ledger.database import LedgerUnavailable, session_scope
from monitors.ledger.registry import sync
from monitors.tasks.common import no_retry, skip_unless

# The DAG's task bodies, in the order they run (shared steps included: the DAG imports only this module).
__all__ = [
    "gate_change", "push_targets", "skip_unless",
]

log = logging.getLogger("monitors.tasks")


# -- privacy_gate --------------------------------------------------------------------------------
def gate_change(deployment: str, action: str, version: str | None, reason: str, actor: str) -> dict:
    """A change by hand from the privacy_gate DAG; bad params fail once, with the field named."""
    from monitors.gates import change

    config = load_config()
    try:
        config.deployment(deployment)
        with session_scope() as session:
            sync(session, config)
            row = change(session, deployment, action, reason, actor, version=version or None)
            detail, action_id = dict(row.detail), row.id
    except LedgerUnavailable:
        raise
    except EmbwardenError as exc:
        raise no_retry(exc) from exc
    log.info("%s: %s by %s (%s)", deployment, action, actor, detail)
    reaudit = ({"deployment": deployment, "version": detail["to"], "reason": f"{action} by hand"}
               if detail.get("reaudit") else None)
    return {"deployment": deployment, "action": action, "action_id": action_id, "detail": detail, "reaudit": reaudit}


def push_targets(change: dict) -> int:
    """Tell the deployment's targets (an MLflow alias, a CD webhook) about the change; a target that
    did not take it fails this task, which Airflow retries (the change itself is not made again)."""
    from monitors.targets import TargetUnavailable, sync_change

    config = load_config()
    targets = config.deployment(change["deployment"]).targets
    skip_unless(targets, f"{change['deployment']} has no targets")
    errors = sync_change(config, change["action_id"])
    if errors:
        raise TargetUnavailable(f"{change['deployment']}: target out of sync (retried): " + "; ".join(errors))
    return len(targets)
