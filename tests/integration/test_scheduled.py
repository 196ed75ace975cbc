"""privacy_audit as it runs in production: started by the scheduler from its schedule, not forced
through `airflow dags test`.

The whole Airflow stack runs on loopback (API server, scheduler with LocalExecutor, dag-processor,
triggerer), with PostgreSQL for Airflow's metadata and for the ledger, and a real SMTP server
receiving the alerts. The story:

1. `airflow dags test` audits v1 (noisy vectors): it passes.
2. An operator deploys v2 (`embwarden activate`), which stores clean vectors: they leak.
3. The stack starts. The scheduler runs privacy_audit from its timetable (run type `scheduled`):
   v2 crosses the rollback threshold, the gate closes, v1 is made active again, the alert is
   mailed, and the re-audit is asked for with an event on the `embwarden_reaudit` Asset.
4. The scheduler starts the re-audit from that event (run type `asset_triggered`): v1 passes,
   the gate reopens and the resolution is mailed.
5. With the stack stopped, `airflow dags test` runs the same audit as the re-audit (v1, attack
   model cached): the overhead of the real stack is the difference. Timings go to
   `.bench/scheduled.json` and the test's output; they are reported, not asserted.
6. `airflow dags test embedding_drift`: v1's passing audits left a reference sample; the window
   drawn from the same pipeline does not drift.

Between 4 and 5, a deploy pipeline of the user's own (docs/examples/deploy_embedder.py) runs on the
stack: its candidate audit passes, its gate sensor finds the gate closed and is *deferred* (the
triggerer polls the ledger; no worker slot is held) until the gate reopens, then it deploys and
runs `embwarden activate`.

Each probe is a mapped task of its own (bag-of-words on the sample, candidates on the canaries,
the coverage check), the ledger is reached through the Airflow connection `embwarden_db`, and
nothing sampled reaches XCom, the task logs or the report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from audits.pipeline import EmbeddingCache
from audits.transforms import GaussianNoise
from tests.conftest import REPO
from tests.helpers import airflow_metadata_db, ledger_connection, messages, production_table, rows_for, write_config
from tests.integration.airflow_stack import AirflowStack

pytestmark = pytest.mark.integration
DAG = "privacy_audit"
EXAMPLE = "deploy_embedder"   # docs/examples/deploy_embedder.py
DEP = "support-search"
RUN_TIMEOUT = 1200   # seconds for one run; about 1-3 min on 2 idle cores


def last_tick(now: datetime) -> tuple[str, datetime]:
    """A cron expression whose latest tick was a minute ago and whose next is a year away.

    With catchup off, Airflow schedules a timetable's latest tick as soon as the DAG is parsed, so
    this gives exactly one scheduled run, at once: no cron tick can start another one while the
    test watches the re-audit.
    """
    tick = (now - timedelta(minutes=1)).replace(second=0, microsecond=0)
    return f"{tick.minute} {tick.hour} {tick.day} {tick.month} *", tick


@pytest.fixture
def stack(pg_url, pg_admin_url, tmp_path, encoder, mail_catcher, model_cache):
    """A stopped stack on fresh metadata and ledger databases, and the production rows written."""
    cache = EmbeddingCache(tmp_path / "cache")
    texts_v1, texts_v2 = messages(150, seed=11), messages(150, seed=12)
    v1 = GaussianNoise(0.2).apply(cache.encode(encoder, texts_v1), np.random.default_rng(0))
    rows = (rows_for("v1", texts_v1, v1, 1, as_bytes=False)
            + rows_for("v2", texts_v2, cache.encode(encoder, texts_v2), 1001, as_bytes=False))
    production_table(pg_url, rows)
    probes = {"candidate_inversion": {"candidates": 20, "max_trials": 10, "bootstrap_resamples": 200}}
    config = write_config(tmp_path / "embwarden.yaml", source_url=pg_url, cache=model_cache, probes=probes)
    with config.open("a") as f:
        f.write("alerts:\n  - {kind: email, to: [privacy@example.com], from_email: embwarden@example.com}\n")
    schedule, tick = last_tick(datetime.now(UTC))
    dags = tmp_path / "dags"   # embwarden's DAGs and a user's own deploy pipeline beside them
    dags.mkdir()
    for path in [*(REPO / "dags").glob("*.py"), REPO / "docs" / "examples" / f"{EXAMPLE}.py"]:
        (dags / path.name).write_text(path.read_text())
    with airflow_metadata_db(pg_admin_url, pg_url) as metadata_url:
        airflow = AirflowStack(tmp_path / "airflow", metadata_url, dags_folder=dags, extra_env={
            "AIRFLOW_CONN_EMBWARDEN_DB": ledger_connection(pg_url),
            "AIRFLOW_CONN_EMBWARDEN_SMTP": mail_catcher.connection(),
            "EMBWARDEN_CONFIG": str(config),
            "EMBWARDEN_AUDIT_SCHEDULE": schedule,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",   # `embwarden activate` in a task
        })
        airflow.env.pop("EMBWARDEN_DB_URL", None)
        airflow.tick = tick
        airflow.migrate()
        try:
            yield airflow, rows
        finally:
            airflow.stop()


def finished(airflow: AirflowStack, run_type: str):
    """The first run of `run_type` once it ended (failing the test with the logs if it failed)."""
    runs = [r for r in airflow.dag_runs(DAG) if r["run_type"] == run_type]
    if runs and runs[0]["state"] in ("success", "failed"):
        assert runs[0]["state"] == "success", f"{run_type} run {runs[0]['run_id']} failed\n{airflow.tails()}"
        return runs[0]
    return None


def seconds(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 1)


def mail_text(message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return b"".join(p.get_payload(decode=True) or b"" for p in parts).decode(errors="replace")


def gate_change(pg_url: str, action: str, reason: str) -> None:
    from monitors.gates import change
    from monitors.ledger.database import session_scope

    with session_scope(pg_url) as session:
        change(session, DEP, action, reason, "test")


def deploy_while_the_gate_is_closed(airflow: AirflowStack, pg_url: str) -> dict:
    """The user's deploy DAG on the running stack: deferred on a closed gate, deploys once it opens."""
    gate_change(pg_url, "close_gate", "closed by hand while v1 is reviewed")
    airflow.unpause(EXAMPLE)
    airflow.cli("dags", "trigger", EXAMPLE, "-c", json.dumps({"version": "v1"}))
    meta = sa.create_engine(airflow.metadata_url)

    def sensor() -> tuple | None:
        with meta.connect() as conn:
            return conn.execute(sa.text("SELECT state, trigger_id FROM task_instance WHERE dag_id = :d AND "
                                        "task_id = 'wait_for_gate'"), {"d": EXAMPLE}).first()

    deferred = airflow.wait_for(lambda: (row := sensor()) and row[0] == "deferred" and row, RUN_TIMEOUT,
                                "the gate sensor to defer")
    assert deferred[1] is not None   # handed to the triggerer, which polls the ledger
    time.sleep(5)
    assert sensor()[0] == "deferred"
    gate_change(pg_url, "reopen_gate", "v1 reviewed: reopened")
    run = airflow.wait_for(lambda: next((r for r in airflow.dag_runs(EXAMPLE) if r["state"] in ("success", "failed")),
                                        None), RUN_TIMEOUT, "the deploy run")
    assert run["state"] == "success", airflow.tails()
    meta.dispose()
    return run


def test_scheduler_runs_the_audit_gates_mails_and_reaudits(stack, pg_url, mail_catcher):
    airflow, rows = stack
    # 1. `airflow dags test`: v1 passes.
    first = dags_test_output(airflow)
    manual = airflow.dag_runs(DAG)[0]
    assert (manual["run_type"], manual["state"]) == ("manual", "success")

    # 2. An operator deploys v2.
    from monitors.cli.main import main as cli

    os.environ["EMBWARDEN_DB_URL"] = pg_url
    try:
        assert cli(["activate", DEP, "v2", "--reason", "deploy v2"]) == 0
    finally:
        del os.environ["EMBWARDEN_DB_URL"]

    # 3. and 4. The stack runs the audit from its schedule, then the re-audit from the Asset event.
    started, started_at = time.monotonic(), datetime.now(UTC)
    with airflow:
        stack_up = time.monotonic() - started
        airflow.unpause(DAG)
        scheduled = airflow.wait_for(lambda: finished(airflow, "scheduled"), RUN_TIMEOUT, "the scheduled run")
        reaudit = airflow.wait_for(lambda: finished(airflow, "asset_triggered"), RUN_TIMEOUT,
                                   "the asset-triggered re-audit")
        deployed = deploy_while_the_gate_is_closed(airflow, pg_url)
        # The REST API of the running API server tells the same story.
        listed = airflow.api(f"/api/v2/dags/{DAG}/dagRuns", order_by="id")["dag_runs"]
        events = airflow.api("/api/v2/assets/events", order_by="timestamp")["asset_events"]
    assert airflow.orphans == [], "processes outlived the stack"

    assert [(r["run_type"], r["state"]) for r in listed] == [("manual", "success"), ("scheduled", "success"),
                                                             ("asset_triggered", "success")]
    assert listed[1]["logical_date"].startswith(airflow.tick.strftime("%Y-%m-%dT%H:%M:00"))   # the timetable's tick
    assert [(e["extra"].get("deployment"), e["extra"].get("version")) for e in events] == [(DEP, "v1")]
    assert events[0]["source_run_id"] == scheduled["run_id"]

    ledger = sa.create_engine(pg_url)
    with ledger.connect() as conn:
        runs = conn.execute(sa.text(
            "SELECT r.id, r.run_id, v.name, r.status, r.verdict FROM audit_runs r "
            "JOIN versions v ON v.id = r.version_id WHERE r.dag_id = :d ORDER BY r.id"), {"d": DAG}).all()
        assert [tuple(r[1:]) for r in runs] == [(manual["run_id"], "v1", "succeeded", "pass"),
                                                (scheduled["run_id"], "v2", "succeeded", "rollback"),
                                                (reaudit["run_id"], "v1", "succeeded", "pass")]
        f1 = conn.execute(sa.text("SELECT value FROM scores WHERE audit_run_id = :r AND probe = 'bow_inversion' "
                                  "AND metric = 'token_f1'"), {"r": runs[1][0]}).scalar()
        assert f1 > 0.55   # above the rollback threshold
        gates = conn.execute(sa.text("SELECT state, audit_run_id, reason FROM gate_events "
                                     "WHERE audit_run_id IS NOT NULL ORDER BY id")).all()
        assert [(g[0], g[1]) for g in gates] == [("closed", runs[1][0]), ("open", runs[2][0])]
        assert "bow_inversion.token_f1" in gates[0][2] and "threshold 0.55" in gates[0][2]
        actions = conn.execute(sa.text("SELECT kind, status FROM actions WHERE audit_run_id = :r ORDER BY id"),
                               {"r": runs[1][0]}).all()
        assert [tuple(a) for a in actions] == [("close_gate", "done"), ("rollback", "done"), ("reaudit", "done"),
                                               ("alert", "done")]
        assert conn.execute(sa.text("SELECT v.name FROM deployments d JOIN versions v "
                                    "ON v.id = d.active_version_id")).scalar() == "v1"
        # Two probes, each its own mapped task: bag-of-words on the sample, candidates on canaries; and
        # the coverage check of the sample by the attacker's corpus.
        assert conn.execute(sa.text("SELECT probe, target, count(*) FROM scores WHERE audit_run_id = :r "
                                    "GROUP BY probe, target ORDER BY probe"), {"r": runs[1][0]}).all() == [
            ("bow_inversion", "sample", 3), ("candidate_inversion", "canaries", 3), ("coverage", "sample", 2)]
        report_path = conn.execute(sa.text("SELECT report_path FROM audit_runs WHERE id = :r"),
                                   {"r": runs[1][0]}).scalar()
        # The user's deploy pipeline: its candidate audit is on record, and `embwarden activate` ran last.
        assert conn.execute(sa.text("SELECT r.verdict FROM audit_runs r WHERE r.dag_id = :d"),
                            {"d": EXAMPLE}).scalars().all() == ["pass"]
        activated = conn.execute(sa.text("SELECT reason, detail FROM actions WHERE kind = 'activate' "
                                         "ORDER BY id DESC LIMIT 1")).first()
        assert activated[0] == f"deployed by {EXAMPLE} run {deployed['run_id']}", activated
    ledger.dispose()

    # The auditor must not become the leak: nothing sampled in XCom, logs or the report.
    meta = sa.create_engine(airflow.metadata_url)
    with meta.connect() as conn:
        xcoms = [json.dumps(v, default=str) for v in conn.execute(sa.text("SELECT value FROM xcom")).scalars()]
    meta.dispose()
    assert xcoms, "the runs should have pushed references through XCom"
    logs = "".join(p.read_text(errors="replace") for p in airflow.home.rglob("*.log"))
    haystack = "\n".join(xcoms) + first + logs + Path(report_path).read_text()
    for row in rows:
        assert row["body"] not in haystack
    assert f"{rows[0]['embedding'][0]:.6f}" not in "\n".join(xcoms)
    assert not list(Path(report_path).parent.glob("sample.npz"))

    assert [m["Subject"] for m in mail_catcher.messages] == [f"[embwarden] {DEP} v2: rollback",
                                                              f"[embwarden] resolved: {DEP} v1: pass"]
    text = mail_text(mail_catcher.messages[0])   # names the deployment, the metric, the threshold and the run
    for cell in (DEP, "bow_inversion.token_f1", "0.55", "close_gate, rollback, reaudit",
                 f"{DAG}/{scheduled['run_id']}"):
        assert f"<td>{cell}</td>" in text, text

    # 5. The overhead of the real stack against `dags test` (reported, not asserted): the re-audit
    # (v1, attack model cached) against the same audit through `dags test`, stack stopped.
    wall = dags_test(airflow)
    warm = airflow.dag_runs(DAG)[-1]
    assert (warm["run_type"], warm["state"]) == ("manual", "success")
    event_at = datetime.fromisoformat(events[0]["timestamp"].replace("Z", "+00:00"))
    timings = {
        "machine": f"{os.cpu_count()} CPUs",
        "stack_start_s": round(stack_up, 1),
        "stack_start_to_scheduled_run_queued_s": seconds(started_at, scheduled["queued_at"]),
        "asset_event_to_run_queued_s": seconds(event_at, reaudit["queued_at"]),
        "runs": {
            "dags_test_v1_first": run_timing(airflow, manual),
            "scheduled_v2_first": run_timing(airflow, scheduled),
            "asset_triggered_v1_cached": run_timing(airflow, reaudit),
            "dags_test_v1_cached": {**run_timing(airflow, warm), "command_wall_s": round(wall, 1)},
        },
    }
    stack_s, test_s = timings["runs"]["asset_triggered_v1_cached"]["queued_to_end_s"], round(wall, 1)
    timings["overhead_s"] = round(stack_s - test_s, 1)
    out = REPO / ".bench" / "scheduled.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"\nthe same audit: {stack_s} s queued to end on the stack, {test_s} s through `airflow dags test` "
          f"(whole command); details in {out}:\n{json.dumps(timings)}")

    # 6. embedding_drift: v1's passing audits left their reference sample; the window drawn from the
    # same pipeline does not drift.
    dags_test_output(airflow, "embedding_drift", {})
    assert [r["state"] for r in airflow.dag_runs("embedding_drift")] == ["success"]


def dags_test(airflow: AirflowStack) -> float:
    started = time.monotonic()
    dags_test_output(airflow)
    return time.monotonic() - started


def dags_test_output(airflow: AirflowStack, dag_id: str = DAG, conf: dict | None = None) -> str:
    done = airflow.cli("dags", "test", dag_id, "-c", json.dumps({"deployment": DEP} if conf is None else conf),
                       timeout=900)
    return done.stdout + done.stderr


def run_timing(airflow: AirflowStack, run: dict) -> dict:
    tasks, busy = airflow.task_stats(DAG, run["run_id"])
    return {"queued_to_end_s": seconds(run["queued_at"], run["end_date"]),
            "start_to_end_s": seconds(run["start_date"], run["end_date"]),
            "tasks": tasks, "task_seconds_sum": round(busy, 1), "per_task_s": round(busy / max(tasks, 1), 2)}
