"""
### Privacy audit

Daily (or on the cron expression in `EMBWARDEN_AUDIT_SCHEDULE`), for every deployment in
`embwarden.yaml` (or only the one named in the `deployment` param), and whenever a re-audit is
asked for (an event on the `embwarden_reaudit` Asset, emitted after a rollback or a version
activated by hand, names the deployment): draw a sample of its production embeddings, validate
it (Great Expectations; a broken sample makes the run invalid), run each configured inversion
probe as its own task (a failing probe loses no other probe's scores), record the leakage scores
in the ledger, set them against the thresholds and act on the verdict (close the gate, roll back
to the last version that passed and ask for its re-audit, reopen the gate when a re-audit
passes, alert by mail and webhook), then write the report. A run that could not judge a deployment
(invalid sample, failed step, inconclusive) ends failed in the grid: its last task, `outcome`, fails.

Tasks pass deployment names and run ids, never vectors or text; the sample is deleted when the
run ends, whatever its outcome. Steps after the probes run whatever became of the others and
skip themselves when their deployment's run stopped earlier, so one deployment's failure does
not hold up another's verdict.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, dag, task

AFTER_ALL = TriggerRule.ALL_DONE
REAUDIT = Asset("embwarden_reaudit")  # monitors.assets.REAUDIT_ASSET
# The time part of the schedule, a cron expression or preset (UTC), read when the file is parsed.
SCHEDULE = os.environ.get("EMBWARDEN_AUDIT_SCHEDULE") or "@daily"


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=REAUDIT),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["embwarden", "privacy"],
    # The delay between tries is Airflow's [core] default_task_retry_delay (300 s unless set).
    default_args={"retries": 2},
    params={"deployment": Param(None, type=["null", "string"], description="Audit only this deployment")},
    doc_md=__doc__,
)
def privacy_audit():
    @task
    def deployments(params=None, triggering_asset_events=None) -> list[str]:
        from monitors.tasks.privacy_audit import list_deployments

        asked = [e.extra.get("deployment") for events in (triggering_asset_events or {}).values() for e in events]
        return list_deployments(params.get("deployment"), [name for name in asked if name])

    @task
    def sample(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.privacy_audit import sample

        return sample(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def validate(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.privacy_audit import validate

        return validate(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def probe_jobs(names: list[str], dag_run=None) -> list[dict]:
        from monitors.tasks.privacy_audit import probe_jobs

        return probe_jobs(names, dag_run.dag_id, dag_run.run_id)

    @task(map_index_template="{{ probe_label }}")
    def probe(ref: dict, probe: str) -> dict:
        from airflow.sdk import get_current_context

        from monitors.tasks.privacy_audit import probe as run_probe

        get_current_context()["probe_label"] = f"{ref['deployment']}/{probe}"  # names the mapped task in the UI
        return run_probe(ref, probe)

    @task(trigger_rule=AFTER_ALL)
    def record(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.privacy_audit import record

        return record(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def evaluate(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.privacy_audit import evaluate

        return evaluate(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def act(deployment: str, dag_run=None) -> dict:
        from monitors.tasks.privacy_audit import act

        return act(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL)
    def reaudit_requests(names: list[str], dag_run=None) -> list[dict]:
        from monitors.tasks.privacy_audit import reaudit_requests

        return reaudit_requests(names, dag_run.dag_id, dag_run.run_id)

    @task(outlets=[REAUDIT], map_index_template="{{ request.deployment }}")
    def reaudit(request: dict, outlet_events=None) -> str:
        from monitors.tasks.privacy_audit import reaudit_requested

        outlet_events[REAUDIT].extra = {k: request[k] for k in ("deployment", "version", "reason")}
        reaudit_requested(request)
        return request["deployment"]

    @task(trigger_rule=AFTER_ALL)
    def report(deployment: str, dag_run=None) -> str:
        from monitors.tasks.privacy_audit import write_report

        return write_report(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL, retries=0)
    def cleanup(deployment: str, dag_run=None) -> int:
        from monitors.tasks.privacy_audit import cleanup

        return cleanup(deployment, dag_run.dag_id, dag_run.run_id)

    @task(trigger_rule=AFTER_ALL, retries=0)
    def outcome(names: list[str], dag_run=None) -> dict:
        from monitors.tasks.privacy_audit import outcome

        return outcome(names, dag_run.dag_id, dag_run.run_id)

    names = deployments()
    sampled = sample.expand(deployment=names)
    checked = validate.expand(deployment=names)
    jobs = probe_jobs(names)
    sampled >> checked >> jobs
    probed = probe.expand_kwargs(jobs)
    recorded = record.expand(deployment=names)
    evaluated = evaluate.expand(deployment=names)
    acted = act.expand(deployment=names)
    reported = report.expand(deployment=names)
    cleaned = cleanup.expand(deployment=names)
    probed >> recorded >> evaluated >> acted >> reported >> cleaned
    cleaned >> outcome(names)   # fails the DAG run when an audit could not judge
    requests = reaudit_requests(names)
    acted >> requests
    reaudit.expand(request=requests) >> reported   # the report shows the re-audit as asked for


privacy_audit()
