"""EmbwardenHook: the ledger through an Airflow connection (`embwarden_db` by default)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

if TYPE_CHECKING:   # the ledger's modules load in the task, not when a user's DAG file is parsed
    from sqlalchemy.orm import Session

    from monitors.gates import GateStatus


class EmbwardenHook(BaseHook):
    """Reads a deployment's gate, thresholds and last verdict from the ledger.

    The connection is a postgres (or sqlite) connection, or any connection whose extra holds
    `sqlalchemy_url`; it is the same `embwarden_db` that embwarden's own DAGs use.
    """

    conn_name_attr = "embwarden_conn_id"
    default_conn_name = "embwarden_db"
    conn_type = "postgres"
    hook_name = "embwarden ledger"

    def __init__(self, embwarden_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.embwarden_conn_id = embwarden_conn_id

    def get_url(self) -> str:
        from monitors.ledger.database import url_of

        return url_of(self.get_connection(self.embwarden_conn_id))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One ledger transaction: committed on success, rolled back on error."""
        from monitors.ledger.database import session_scope

        with session_scope(self.get_url()) as session:
            yield session

    def gate(self, deployment: str) -> GateStatus:
        from monitors.gates import status

        with self.session() as session:
            return status(session, deployment)

    def thresholds(self, deployment: str) -> dict[str, dict]:
        """The thresholds in force: metric -> {warn, gate, rollback, higher_is_worse, basis}."""
        from monitors.thresholds import effective

        with self.session() as session:
            return effective(session, deployment)

    def last_verdict(self, deployment: str) -> dict | None:
        """The newest judged privacy audit of the deployment: its id, version, verdict and DAG run."""
        import sqlalchemy as sa

        from monitors.assets import AUDIT_DAG
        from monitors.ledger.models import AuditRun
        from monitors.ledger.registry import get_deployment

        with self.session() as session:
            dep = get_deployment(session, deployment)
            run = session.scalar(sa.select(AuditRun).where(AuditRun.deployment_id == dep.id,
                                                           AuditRun.dag_id == AUDIT_DAG,
                                                           AuditRun.verdict.is_not(None))
                                 .order_by(AuditRun.id.desc()).limit(1))
            if run is None:
                return None
            return {"audit_run_id": run.id, "version": run.version.name, "verdict": run.verdict,
                    "dag_id": run.dag_id, "run_id": run.run_id}
