"""
### Privacy audit

Daily, for every deployment in `embwarden.yaml` (or only the one named in the `deployment`
param): draw a sample of its production embeddings, run the configured inversion probes, record
the leakage scores in the ledger, set them against the thresholds and act on the verdict
(alert, close the gate, roll back to the last version that passed), then write the report.

Tasks pass run ids and artifact folders, never vectors or text; the sample is deleted when the
run ends, whatever its outcome.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, TriggerRule, dag, task


@dag(
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["embwarden", "privacy"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={"deployment": Param(None, type=["null", "string"], description="Audit only this deployment")},
    doc_md=__doc__,
)
def privacy_audit():
    @task
    def deployments(params=None) -> list[str]:
        from monitors.runs import list_deployments

        return list_deployments(params.get("deployment"))

    @task
    def sample(deployment: str, dag_run=None) -> dict:
        from monitors.runs import sample

        return sample(deployment, dag_run.dag_id, dag_run.run_id)

    @task
    def probe(ref: dict) -> dict:
        from monitors.runs import probe

        return probe(ref)

    @task
    def record(ref: dict) -> dict:
        from monitors.runs import record

        return record(ref)

    @task
    def evaluate(ref: dict) -> dict:
        from monitors.runs import evaluate

        return evaluate(ref)

    @task
    def act(ref: dict) -> dict:
        from monitors.runs import act

        return act(ref)

    @task
    def report(ref: dict) -> str:
        from monitors.runs import write_report

        return write_report(ref)

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def cleanup(deployment: str, dag_run=None) -> int:
        from monitors.runs import cleanup

        return cleanup(deployment, dag_run.dag_id, dag_run.run_id)

    names = deployments()
    refs = sample.expand(deployment=names)
    reports = report.expand(ref=act.expand(ref=evaluate.expand(ref=record.expand(ref=probe.expand(ref=refs)))))
    reports >> cleanup.expand(deployment=names)


privacy_audit()
