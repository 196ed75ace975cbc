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
    "gate_change", "skip_unless",
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
            detail = dict(row.detail)
    except LedgerUnavailable:
        raise
    except EmbwardenError as exc:
        raise no_retry(exc) from exc
    log.info("%s: %s by %s (%s)", deployment, action, actor, detail)
    reaudit = ({"deployment": deployment, "version": detail["to"], "reason": f"{action} by hand"}
               if detail.get("reaudit") else None)
    return {"deployment": deployment, "action": action, "detail": detail, "reaudit": reaudit}
