"""Airflow cluster policy of the compose deployment (the image puts it in $AIRFLOW_HOME/config).

With `EMBWARDEN_PROBE_QUEUE` set (docker/gpu.env sets `gpu`), the tasks that train attack models
(the `probe` tasks of `privacy_audit`, the `sweep` of `privacy_frontier`) are sent to that Celery
queue, where only `airflow-worker-gpu` listens; all other tasks keep the default queue. Unset or
empty (the default), nothing changes. The DAG processor applies the policy when it parses the
DAGs, so the variable must reach it (the compose file gives it to every Airflow service);
LocalExecutor ignores queues.
"""

from __future__ import annotations

import os

__all__ = ["task_policy"]  # Airflow copies every public name of this module into airflow.settings

QUEUE_ENV = "EMBWARDEN_PROBE_QUEUE"
PROBE_TASKS = {("privacy_audit", "probe"), ("privacy_frontier", "sweep")}


def task_policy(task) -> None:
    queue = os.environ.get(QUEUE_ENV, "").strip()
    if queue and (task.dag_id, task.task_id) in PROBE_TASKS:
        task.queue = queue
