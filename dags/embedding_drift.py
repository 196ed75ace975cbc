"""
### Embedding drift

Hourly, for every deployment whose active version has a reference sample (the vectors of its
last passing privacy audit): draw the recent window of its production embeddings (the last
`drift.window_hours`, up to `drift.sample_size` rows), validate it (Great Expectations), compare
it with the reference (evidently's model-based ROC AUC and MMD, and a Kolmogorov-Smirnov test on
vector norms), record the scores `drift.model_auc`, `drift.mmd`, `drift.norm_ks`, and judge and
act on them like leakage scores: thresholds, verdict, alert, gate. A privacy transform silently
dropped in production shows here first. evidently's own HTML report is linked from the run's report.

Tasks pass deployment names and run ids, never vectors; the window is deleted when the run ends.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import TriggerRule, chain, dag, task

AFTER_ALL = TriggerRule.ALL_DONE


@dag(
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["embwarden", "drift"],
    # The delay between tries is Airflow's [core] default_task_retry_delay (300 s unless set).
    default_args={"retries": 2},
    doc_md=__doc__,
)
def embedding_drift():
    @task
    def deployments() -> list[str]:
        from monitors.tasks.embedding_drift import has_reference, list_deployments

        return [name for name in list_deployments() if has_reference(name)]

    @task
    def window(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.embedding_drift import window

        return window(deployment, dag_run.dag_id, dag_run.run_id, window_end=dag_run.run_after.timestamp())

    @task(trigger_rule=AFTER_ALL)
    def validate(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.embedding_drift import validate

        return validate(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def drift(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.embedding_drift import drift

        return drift(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def record(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.embedding_drift import record

        return record(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def evaluate(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.embedding_drift import evaluate

        return evaluate(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def act(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.embedding_drift import act

        return act(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def report(deployment: str, dag_run=None) -> str:
        from monitors.tasks.embedding_drift import write_report

        return write_report(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL, retries=0)
    def cleanup(deployment: str, dag_run=None) -> int:
        from monitors.tasks.embedding_drift import cleanup

        return cleanup(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL, retries=0)
    def outcome(names: list[str], dag_run=None) -> dict:
        from monitors.tasks.embedding_drift import outcome

        return outcome(names, dag_run.dag_id, dag_run.run_id)

    names = deployments()
    chain(*(step.expand(deployment=names) for step in (window, validate, drift, record, evaluate, act, report,
                                                       cleanup)), outcome(names))


embedding_drift()
