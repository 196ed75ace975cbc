"""What every task shares: the run's reference (RunRef), how a step fails, and finding the run again.

Tasks hand each other a RunRef through XCom, never data. Every step reads what it needs from the
ledger or the run's artifact folder, so any step can be retried alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from audits.errors import EmbwardenError, EncoderUnavailable, InvalidSample, SourceUnavailable
from audits.storage import Location
from monitors import artifacts
from monitors.config import EmbwardenConfig, load_config
from monitors.config.deployment import stored_location
from monitors.ledger.database import LedgerUnavailable, migrate, row, session_scope
from monitors.ledger.models import AuditRun, Deployment, utcnow
from monitors.ledger.registry import sync

log = logging.getLogger("monitors.tasks")


@dataclass(frozen=True)
class RunRef:
    """What tasks hand each other through XCom: ids and a folder, nothing sampled. The folder is
    its URL or path (a local folder, or s3://connection@bucket/prefix/...) for any worker to open."""

    deployment: str
    dag_id: str
    run_id: str
    audit_run_id: int
    artifact_dir: str

    @property
    def folder(self) -> Location:
        return stored_location(self.artifact_dir)

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, data: dict) -> RunRef:
        return cls(**data)


def skip(reason: str) -> Exception:
    try:
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # pragma: no cover - used outside Airflow
        return RuntimeError(reason)
    return AirflowSkipException(reason)


def no_retry(exc: Exception) -> Exception:
    """Bad input will be as bad on a retry: tell Airflow not to retry it."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # pragma: no cover - used outside Airflow
        return exc
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


RETRYABLE = "(retryable)"


@contextmanager
def failing_run(audit_run_id: int | None, step: str) -> Iterator[None]:
    """Record any error on the audit run before re-raising it, so no run looks clean by accident.

    Bad input or configuration is raised so that Airflow does not retry it; an unreachable
    source, encoder API or ledger, and unexpected errors, keep Airflow's retries, and the error is marked
    retryable by `step`, so that the retried step resumes the run instead of skipping it.
    """
    try:
        yield
    except Exception as exc:
        log.error("audit run %s stopped in %s: %s: %s", audit_run_id, step, type(exc).__name__, exc)
        retryable = not isinstance(exc, EmbwardenError) or isinstance(
            exc, SourceUnavailable | EncoderUnavailable | LedgerUnavailable)
        if audit_run_id is not None:
            mark_stopped(audit_run_id, exc, f"{RETRYABLE} {step}: " if retryable else "")
        if not retryable:
            raise no_retry(exc) from exc
        raise


def mark_stopped(audit_run_id: int, exc: Exception, prefix: str = "") -> None:
    invalid = isinstance(exc, InvalidSample)
    try:
        with session_scope() as session:
            run = row(session, AuditRun, audit_run_id)
            run.status = "invalid" if invalid else "failed"
            run.verdict = "invalid" if invalid else None
            run.error = f"{prefix}{type(exc).__name__}: {exc}"
            run.finished_at = utcnow()
    except LedgerUnavailable as ledger_down:  # the original error matters more; say both
        log.error("audit run %s could not be marked stopped: %s", audit_run_id, ledger_down)


def run_folder(config: EmbwardenConfig, deployment: str, dag_id: str, run_id: str) -> Location:
    """The run's artifact folder under `artifacts.root` (owner-only where the store allows)."""
    return artifacts.run_dir(config.artifacts_root, deployment, dag_id, run_id)


def find_ref(deployment: str, dag_id: str, run_id: str) -> RunRef | None:
    """The run's reference from the ledger, or None when its sample step never opened it."""
    config = load_config()
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun).join(AuditRun.deployment).where(
            AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, Deployment.name == deployment))
        if run is None:
            return None
        return RunRef(deployment, dag_id, run_id, run.id, str(run_folder(config, deployment, dag_id, run_id)))


def live_ref(deployment: str, dag_id: str, run_id: str, step: str) -> RunRef:
    """The run's reference, or skip `step` when the run stopped earlier (its error is recorded)."""
    ref = find_ref(deployment, dag_id, run_id)
    if ref is None:
        raise skip(f"{deployment}: no audit run was opened; nothing to {step}")
    with session_scope() as session:
        run = row(session, AuditRun, ref.audit_run_id)
        if run.status == "failed" and (run.error or "").startswith(f"{RETRYABLE} {step}: "):
            log.info("audit run %d: retrying %s after: %s", run.id, step, run.error)
            run.status, run.error, run.finished_at = "running", None, None   # Airflow's retry of this step
        if run.status in ("failed", "invalid"):
            raise skip(f"{deployment}: audit run {run.id} is {run.status} ({run.error}); nothing to {step}")
        if step == "evaluate" and not run.scores:
            raise skip(f"{deployment}: audit run {run.id} has no recorded scores; nothing to evaluate")
        if step == "act" and run.verdict is None:
            raise skip(f"{deployment}: audit run {run.id} has no verdict; nothing to act on")
    return ref



def list_deployments(only: str | None = None, reaudits: list[str] | None = None) -> list[str]:
    """The deployments this run audits, after bringing the ledger's schema and registry up to date.

    `only` comes from the run's params; `reaudits` from the re-audit Asset events that started
    the run (each names a deployment); neither: every deployment in the configuration.
    """
    config = load_config()
    names = [only] if only else sorted(set(reaudits)) if reaudits else sorted(config.deployments)
    for name in names:
        config.deployment(name)
    migrate()
    with session_scope() as session:
        sync(session, config)
    return names


def skip_unless(condition, reason: str) -> None:
    if not condition:
        raise skip(reason)
