"""PrivacyAuditOperator: audit a candidate version before a user's own DAG deploys it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from monitors.provider.hooks import EmbwardenHook

# Verdicts that fail the task: a leak at gate or rollback level, and any audit that could not judge.
FAIL_ON = ("gate", "rollback", "inconclusive", "invalid", "error")


class PrivacyAuditOperator(BaseOperator):
    """Judge `version` of `deployment` (a version in embwarden.yaml, not yet active) with the
    deployment's probes, coverage and thresholds, as monitors.candidates describes; the run is
    recorded in the ledger. The task fails when the verdict is in `fail_on` (by default gate,
    rollback and the verdicts that could not judge: never a silent pass). Only the audit run's id
    and the verdict go to XCom (key `return_value`, also when the task fails).
    """

    template_fields: Sequence[str] = ("deployment", "version")
    ui_color = "#f5d5e0"

    def __init__(self, *, deployment: str, version: str, embwarden_conn_id: str = EmbwardenHook.default_conn_name,
                 fail_on: Sequence[str] = FAIL_ON, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        unknown = sorted(set(fail_on) - {"warn", *FAIL_ON})
        if unknown:
            raise ValueError(f"fail_on: unknown verdict(s) {unknown}; expected some of {['warn', *FAIL_ON]}")
        self.deployment, self.version = deployment, version
        self.embwarden_conn_id = embwarden_conn_id
        self.fail_on = tuple(fail_on)
        self.config_path = config_path

    def execute(self, context: Context) -> dict:
        from audits.errors import ConfigError, EmbwardenError
        from monitors.candidates import judge, record
        from monitors.config import load_config
        from monitors.thresholds import effective_thresholds

        hook = EmbwardenHook(self.embwarden_conn_id)
        config = load_config(self.config_path)
        with hook.session() as session:
            from monitors.ledger.registry import sync_deployment

            dep = sync_deployment(session, self.deployment, config.deployment(self.deployment))
            levels = effective_thresholds(session, dep)
        try:
            result = judge(config, self.deployment, self.version, thresholds=(levels, "ledger"))
        except ConfigError as exc:
            raise AirflowFailException(f"{self.deployment} {self.version}: {exc}") from exc
        except EmbwardenError as exc:   # a source or encoder that cannot be reached: Airflow retries
            raise EmbwardenError(f"{self.deployment} {self.version}: the audit could not run: {exc}") from exc
        dag_run = context["dag_run"]
        with hook.session() as session:
            audit_run_id = record(session, config, result, dag_run.dag_id, f"{dag_run.run_id}/{self.task_id}")
        outcome = {"audit_run_id": audit_run_id, "verdict": result.verdict}
        self.log.info("%s %s: %s (%s); audit run %d", self.deployment, self.version, result.verdict, result.reason,
                      audit_run_id)
        if result.verdict in self.fail_on:
            context["ti"].xcom_push(key="return_value", value=outcome)
            raise AirflowFailException(f"{self.deployment} {self.version}: {result.verdict}: {result.reason} "
                                       f"(audit run {audit_run_id})")
        return outcome

