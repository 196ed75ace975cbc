"""
### Privacy gate

Change a deployment's gate or active version by hand, with a reason that is recorded:

* `close_gate` / `reopen_gate`: services that honour the gate stop or resume serving;
* `rollback`: make `version` (or, left empty, the last version that passed an audit) active;
* `activate`: roll back or forward to the named `version`.

Both version changes ask for a re-audit of the version now active (an event on the
`embwarden_reaudit` Asset). Every change is an action in the ledger with who and why, then pushed
to the deployment's targets (an MLflow alias, a signed CD webhook), retried until they take it.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, Param, dag, task

REAUDIT = Asset("embwarden_reaudit")  # monitors.assets.REAUDIT_ASSET


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["embwarden", "privacy"],
    default_args={"retries": 2},
    params={
        "deployment": Param(type="string", pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", title="Deployment",
                            description="As named in embwarden.yaml, e.g. support-search"),
        "action": Param("close_gate", enum=["close_gate", "reopen_gate", "rollback", "activate"], title="Action"),
        "version": Param(None, type=["null", "string"], title="Version",
                         description="For activate (required) and rollback (default: last version that passed)"),
        "reason": Param(type="string", minLength=10, maxLength=2000, title="Reason",
                        description="Why: recorded with the change and shown to everyone who looks at the gate"),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
)
def privacy_gate():
    @task
    def apply(params=None, dag_run=None) -> dict:
        from monitors.tasks.privacy_gate import gate_change

        return gate_change(params["deployment"], params["action"], params.get("version"), params["reason"],
                           f"{dag_run.dag_id}/{dag_run.run_id} ({dag_run.run_type})")

    @task(outlets=[REAUDIT])
    def reaudit(change: dict, outlet_events=None) -> str:
        from monitors.tasks.privacy_gate import skip_unless

        skip_unless(change.get("reaudit"), "the gate changed, the active version did not: no re-audit")
        outlet_events[REAUDIT].extra = change["reaudit"]
        return change["reaudit"]["deployment"]

    @task
    def push_targets(change: dict) -> int:
        from monitors.tasks.privacy_gate import push_targets

        return push_targets(change)

    change = apply()
    push_targets(change)
    reaudit(change)


privacy_gate()
