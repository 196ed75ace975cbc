"""embwarden as an Airflow provider: registered with Airflow, the hook and the trigger on a real
PostgreSQL ledger, and the example deploy DAG (docs/examples/deploy_embedder.py) through
`airflow dags test`: a closed gate fails it before deploy, or holds it (deferred) until the gate
reopens, then it deploys and activates the audited version."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from monitors.config import load_config
from monitors.gates import change
from monitors.ledger.database import session_scope
from monitors.ledger.models import AuditRun, Deployment
from monitors.ledger.registry import sync
from tests.conftest import REPO
from tests.helpers import ledger_connection, migrated_airflow, production_table, write_config
from tests.monitors.tasks.test_privacy_audit import DEP, production_rows  # noqa: F401

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
EXAMPLE = "deploy_embedder"


def test_airflow_lists_embwarden_as_a_provider(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    listed = subprocess.run([AIRFLOW, "providers", "list", "-o", "json"], env=env, capture_output=True, text=True,
                            timeout=300, check=True)
    providers = {p["package_name"]: p for p in json.loads(listed.stdout)}
    assert "embwarden" in providers, listed.stdout[-2000:]
    triggers = subprocess.run([AIRFLOW, "providers", "triggers", "-o", "json"], env=env, capture_output=True,
                              text=True, timeout=300, check=True)
    assert "monitors.provider.triggers" in triggers.stdout


@pytest.fixture
def ledger_with_deployment(ledger, production_rows, model_cache, tmp_path, monkeypatch):  # noqa: F811
    """support-search (v1 active; v2 unprotected; v3 noisy like v1) in the ledger, reached as `embwarden_db`."""
    production_table(ledger, production_rows)
    path = write_config(tmp_path / "embwarden.yaml", source_url=ledger, cache=model_cache)
    config = yaml.safe_load(path.read_text())
    config["deployments"][DEP]["versions"]["v3"] = {"transform": {"kind": "gaussian_noise", "sigma": 0.2}}
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(path))
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_DB", ledger_connection(ledger))
    with session_scope() as session:
        sync(session, load_config(path))
    return path


def set_gate(action: str, reason: str) -> None:
    with session_scope() as session:
        change(session, DEP, action, reason, "test")


def test_the_hook_reads_gate_thresholds_and_verdict_through_the_connection(ledger_with_deployment):
    from monitors.provider.hooks import EmbwardenHook

    hook = EmbwardenHook()
    assert hook.get_url().startswith("postgresql+psycopg2://")
    assert hook.gate(DEP).is_open and hook.gate(DEP).active_version == "v1"
    assert hook.thresholds(DEP)["bow_inversion.token_f1"]["gate"] == 0.5
    assert hook.last_verdict(DEP) is None
    set_gate("close_gate", "closed for the hook test")
    gate = hook.gate(DEP)
    assert (gate.state, gate.reason) == ("closed", "closed for the hook test")


def test_the_trigger_fires_when_the_gate_opens_and_fails_fast_when_asked(ledger_with_deployment):
    from monitors.provider.triggers import GateOpenTrigger

    set_gate("close_gate", "leak under investigation")
    trigger = GateOpenTrigger(DEP, poll_interval=0.2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "monitors.provider.triggers.GateOpenTrigger" and json.dumps(kwargs)

    async def first_event(t):
        return await asyncio.wait_for(anext(t.run()), timeout=30)

    reopen = threading.Timer(1.0, set_gate, ("reopen_gate", "investigated: no leak"))
    reopen.start()
    started = time.monotonic()
    event = asyncio.run(first_event(trigger))
    assert time.monotonic() - started >= 0.9   # it waited for the gate, polling
    assert event.payload["status"] == "open" and event.payload["gate"]["reason"] == "investigated: no leak"

    set_gate("close_gate", "leak under investigation again")
    event = asyncio.run(first_event(GateOpenTrigger(DEP, poll_interval=0.2, fail_when_closed=True)))
    assert event.payload["status"] == "closed" and "again" in event.payload["gate"]["reason"]


def audit_runs() -> int:
    """Audit runs recorded in the ledger: the candidate's audit is done when one more is there."""
    with session_scope() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(AuditRun)))


def task_states(metadata_url: str) -> dict[str, str]:
    meta = sa.create_engine(metadata_url)
    with meta.connect() as conn:
        rows = conn.execute(sa.text("SELECT task_id, state FROM task_instance WHERE dag_id = :d "
                                    "ORDER BY start_date"), {"d": EXAMPLE}).all()
        conn.execute(sa.text("DELETE FROM task_instance WHERE dag_id = :d"), {"d": EXAMPLE})
    meta.dispose()
    return dict(rows)


@pytest.mark.integration
def test_the_example_deploy_dag_waits_for_the_gate_then_deploys(ledger_with_deployment, ledger, pg_admin_url,
                                                                 tmp_path):
    config = ledger_with_deployment
    path_env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "docs" / "examples")}
    with migrated_airflow(pg_admin_url, ledger, tmp_path / "airflow", config, **path_env) as (env, metadata_url):
        def dags_test(conf: dict) -> subprocess.Popen:
            return subprocess.Popen([AIRFLOW, "dags", "test", EXAMPLE, "-c", json.dumps(conf)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        # 0. The unprotected v2 leaks: the audit fails the run before anything waits or deploys; XCom
        #    holds the audit run's id and verdict, nothing sampled.
        run = dags_test({"version": "v2"})
        out, _ = run.communicate(timeout=900)
        assert run.returncode != 0 and "support-search v2: rollback: bow_inversion.token_f1 = 0." in out, out[-3000:]
        meta = sa.create_engine(metadata_url)
        with meta.connect() as conn:
            xcoms = conn.execute(sa.text("SELECT task_id, key, value FROM xcom WHERE dag_id = :d"),
                                 {"d": EXAMPLE}).all()
        meta.dispose()
        [(task_id, key, value)] = xcoms
        value = json.loads(value) if isinstance(value, str) else value
        assert (task_id, key, set(value), value["verdict"]) == ("audit_candidate", "return_value",
                                                                {"audit_run_id", "verdict"}, "rollback")
        states = task_states(metadata_url)
        assert states["audit_candidate"] == "failed" and states.get("deploy") in ("upstream_failed", None), states

        # 1. The gate is closed and the pipeline should not queue: it fails at the gate, nothing deployed.
        set_gate("close_gate", "v2 leaked; investigating")
        run = dags_test({"version": "v3", "fail_when_closed": True})
        out, _ = run.communicate(timeout=900)
        assert run.returncode != 0, out[-3000:]
        states = task_states(metadata_url)
        assert states["audit_candidate"] == "success" and states["wait_for_gate"] == "failed", states
        assert states.get("deploy") in ("upstream_failed", None) and states.get("activate") in ("upstream_failed",
                                                                                                None), states
        assert "the privacy gate of support-search is closed: v2 leaked; investigating" in out

        # 2. The gate is closed and the pipeline waits (deferred, the trigger polls); it reopens; v3 is deployed.
        audits_before = audit_runs()
        run = dags_test({"version": "v3"})
        deadline = time.monotonic() + 600   # the candidate's audit first: its time depends on the machine
        while audit_runs() == audits_before and run.poll() is None and time.monotonic() < deadline:
            time.sleep(2)
        waited = time.monotonic()
        time.sleep(15)                       # the sensor starts, finds the gate closed and defers
        assert run.poll() is None, "the sensor did not wait for the closed gate"
        set_gate("reopen_gate", "investigated; v2 is not deployed")
        out, _ = run.communicate(timeout=900)
        assert run.returncode == 0, out[-3000:]
        assert time.monotonic() - waited > 15
        assert "deferring until it opens" in out and "running trigger in line" in out
        states = task_states(metadata_url)
        assert set(states.values()) == {"success"} and len(states) == 4, states

    with session_scope() as session:
        dep = session.scalar(sa.select(Deployment))
        assert dep.active_version.name == "v3"
        candidates = session.scalars(sa.select(AuditRun).where(AuditRun.dag_id == EXAMPLE).order_by(AuditRun.id)).all()
        assert [(r.version.name, r.verdict) for r in candidates] == [("v2", "rollback"), ("v3", "pass"), ("v3", "pass")]
        assert all(r.run_id.endswith("/audit_candidate") and r.scores for r in candidates)
