"""
### Deploy an embedding model, guarded by embwarden

A deploy pipeline of your own (not one of embwarden's DAGs): audit the candidate version with the
deployment's probes and thresholds, wait until the deployment's privacy gate is open, deploy,
then tell embwarden which version now serves (`embwarden activate`, which also moves an MLflow
alias or calls a CD webhook when the deployment has targets).

* `audit_candidate` fails on a gate or rollback verdict, and on any audit that could not judge;
* `wait_for_gate` defers to the triggerer while the gate is closed (no worker slot held), or fails
  at once with the gate's reason when `fail_when_closed` is set.

Copy it into your DAGs folder; `deploy` is where your own rollout goes.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag, task

from monitors.provider.operators import PrivacyAuditOperator
from monitors.provider.sensors import PrivacyGateSensor

NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"   # deployment and version names, as embwarden.yaml allows


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["deploy", "embwarden"],
    default_args={"retries": 0},
    params={
        "deployment": Param("support-search", type="string", pattern=NAME, title="Deployment"),
        "version": Param(type="string", pattern=NAME, title="Version to deploy",
                         description="a version in embwarden.yaml"),
        "fail_when_closed": Param(False, type="boolean", title="Fail instead of waiting while the gate is closed"),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
)
def deploy_embedder():
    audit = PrivacyAuditOperator(task_id="audit_candidate", deployment="{{ params.deployment }}",
                                 version="{{ params.version }}")
    gate = PrivacyGateSensor(task_id="wait_for_gate", deployment="{{ params.deployment }}",
                             fail_when_closed="{{ params.fail_when_closed }}", poke_interval=15,
                             timeout=6 * 3600, deferrable=True)

    @task
    def deploy(params=None) -> str:
        # Your rollout: push the model to serving, update a Helm value, promote an image...
        print(f"deploying {params['deployment']} {params['version']}")
        return params["version"]

    activate = BashOperator(   # values go through the environment, never into the command's text
        task_id="activate",
        bash_command='embwarden activate "$DEPLOYMENT" "$VERSION" --reason "deployed by $DAG_ID run $RUN_ID"',
        env={"DEPLOYMENT": "{{ params.deployment }}", "VERSION": "{{ params.version }}",
             "DAG_ID": "{{ dag.dag_id }}", "RUN_ID": "{{ run_id }}"},
        append_env=True,
    )
    audit >> gate >> deploy() >> activate


deploy_embedder()
