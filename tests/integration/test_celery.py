"""privacy_audit across machines: Airflow's CeleryExecutor with four workers, run data on an S3 store.

The stack on loopback: API server, scheduler (CeleryExecutor), dag-processor and triggerer; Redis as
the broker, PostgreSQL as metadata DB, Celery result backend and ledger; SeaweedFS as the S3 store
that holds the run data (samples, scores, reports) and the caches (embeddings, attack models with
their keyed digests). Each worker has its own empty working folder, TMPDIR, HOME and log folder,
and reports its own host name, so nothing can pass between two tasks through a local disk:

    w1, w2   the default queue: every task but the probes
    g1, g2   the `gpu` queue only: the probe tasks, sent there by the cluster policy
             (docker/airflow_local_settings.py with EMBWARDEN_PROBE_QUEUE=gpu)

The story: `airflow dags test` audits support-search's noisy v1 (it passes); then v2, whose clean
vectors leak, is deployed; `notes-search` runs a noisy v1. The scheduler runs privacy_audit for both.
While a probe task runs, its worker is killed with SIGKILL (the machine dies): the scheduler notices
the missing heartbeat, and the task's retry runs on the other gpu worker. support-search is gated
and rolled back to v1, the alert is mailed, the re-audit (asset-triggered) passes and reopens the
gate; notes-search passes. Then: every probe ran on a gpu worker and nothing else did, the default
tasks ran on both w1 and w2, the ledger holds no duplicate scores, gate events, actions or alerts,
the store holds no sample, and the workers' folders hold nothing but their task logs, which name no
sampled text.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from audits.pipeline import EmbeddingCache
from audits.transforms import GaussianNoise
from tests.conftest import REPO
from tests.helpers import airflow_metadata_db, ledger_connection, messages, production_table, rows_for, write_config
from tests.integration.airflow_stack import AirflowStack
from tests.integration.test_scheduled import finished, last_tick
from tests.object_store import CONNECTION
from tests.receivers import free_port

pytestmark = pytest.mark.integration
DAG = "privacy_audit"
LEAKY, QUIET = "support-search", "notes-search"
RUN_TIMEOUT = 1200
GPU, DEFAULT = ("g1", "g2"), ("w1", "w2")


@pytest.fixture
def broker(tmp_path):
    """Redis for Celery: a database of its own on the server at 127.0.0.1:6379, or a redis-server
    started here when none answers there."""
    import redis

    db = random.randint(1, 15)
    try:
        redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=2).ping()
        client, proc = redis.Redis(host="127.0.0.1", port=6379, db=db), None
        url = f"redis://127.0.0.1:6379/{db}"
    except redis.ConnectionError:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("no Redis on 127.0.0.1:6379 and no redis-server: scripts/ensure-redis.sh", pytrace=False)
        port = free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client, url = redis.Redis(host="127.0.0.1", port=port, db=db), f"redis://127.0.0.1:{port}/{db}"
        for _ in range(50):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
    client.flushdb()
    yield url
    client.flushdb()
    if proc is not None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def stack(pg_url, pg_admin_url, tmp_path, encoder, mail_catcher, object_store, broker):
    cache = EmbeddingCache(tmp_path / "local-cache")
    texts = {name: messages(120, seed=seed) for name, seed in (("v1", 11), ("v2", 12), ("notes", 13))}
    v1 = GaussianNoise(0.2).apply(cache.encode(encoder, texts["v1"]), np.random.default_rng(0))
    notes = GaussianNoise(0.2).apply(cache.encode(encoder, texts["notes"]), np.random.default_rng(1))
    leaky_rows = (rows_for("v1", texts["v1"], v1, 1, as_bytes=False)
                  + rows_for("v2", texts["v2"], cache.encode(encoder, texts["v2"]), 1001, as_bytes=False))
    quiet_rows = rows_for("v1", texts["notes"], notes, 1, as_bytes=False)
    production_table(pg_url, leaky_rows)
    production_table(pg_url, quiet_rows, table="notes_vectors")

    bucket = object_store.bucket()
    probes = {"candidate_inversion": {"candidates": 20, "max_trials": 10, "bootstrap_resamples": 200}}
    (tmp_path / "config").mkdir()
    path = write_config(tmp_path / "config" / "embwarden.yaml", source_url=pg_url, probes=probes, sample_size=100)
    config = yaml.safe_load(path.read_text())
    config["artifacts"] = {"root": f"s3://{bucket}/artifacts", "connection": CONNECTION, "retention_days": 30}
    config["cache_dir"] = f"s3://{bucket}/cache"
    quiet = json.loads(json.dumps(config["deployments"][LEAKY]))
    quiet["source"]["table"], quiet["active_version"] = "notes_vectors", "v1"
    config["deployments"][QUIET] = quiet
    config["alerts"] = [{"kind": "email", "to": ["privacy@example.com"], "from_email": "embwarden@example.com"}]
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    schedule, _ = last_tick(datetime.now(UTC))
    with airflow_metadata_db(pg_admin_url, pg_url) as metadata_url:
        airflow = AirflowStack(tmp_path / "airflow", metadata_url, executor="CeleryExecutor", parallelism=8, extra_env={
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
            # A worker that dies is noticed by its missing heartbeat; its task's retry comes soon after.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "45",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
            "AIRFLOW_CONN_EMBWARDEN_DB": ledger_connection(pg_url),
            "AIRFLOW_CONN_EMBWARDEN_SMTP": mail_catcher.connection(),
            f"AIRFLOW_CONN_{CONNECTION.upper()}": object_store.connection(),
            "EMBWARDEN_CONFIG": str(path),
            "EMBWARDEN_AUDIT_SCHEDULE": schedule,
            "EMBWARDEN_PROBE_QUEUE": "gpu",
            "EMBWARDEN_CACHE_KEY": os.urandom(16).hex(),
        })
        airflow.env.pop("EMBWARDEN_DB_URL", None)
        # The compose deployment's cluster policy, where Airflow looks for it.
        (airflow.home / "config").mkdir()
        shutil.copy(REPO / "docker" / "airflow_local_settings.py", airflow.home / "config")
        airflow.migrate()
        try:
            yield airflow, bucket, leaky_rows + quiet_rows
        finally:
            airflow.stop()


def task_instances(airflow: AirflowStack, *columns: str, table: str = "task_instance") -> list[dict]:
    engine = sa.create_engine(airflow.metadata_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT {', '.join(columns)} FROM {table} WHERE dag_id = :d"),
                                {"d": DAG}).mappings().all()
    finally:
        engine.dispose()
    return [dict(r) for r in rows]


def running_probe(airflow: AirflowStack) -> dict | None:
    rows = [t for t in task_instances(airflow, "task_id", "map_index", "state", "hostname", "try_number")
            if t["task_id"] == "probe" and t["state"] == "running" and t["hostname"] in GPU]
    return rows[0] if rows else None


def test_a_celery_cluster_audits_on_an_object_store_and_survives_a_worker_killed_mid_probe(
        stack, pg_url, mail_catcher, object_store):
    airflow, bucket, rows = stack
    # v1 passes (`airflow dags test`, in this process's machine), then v2 is deployed.
    airflow.cli("dags", "test", DAG, "-c", json.dumps({"deployment": LEAKY}), timeout=900)
    from monitors.cli.main import main as cli

    os.environ["EMBWARDEN_DB_URL"] = pg_url
    try:
        assert cli(["activate", LEAKY, "v2", "--reason", "deploy v2"]) == 0
    finally:
        del os.environ["EMBWARDEN_DB_URL"]

    with airflow:
        for name in DEFAULT:
            airflow.start_worker(name, ["default"])
        for name in GPU:
            airflow.start_worker(name, ["gpu"])
        airflow.unpause(DAG)

        victim = airflow.wait_for(lambda: running_probe(airflow), RUN_TIMEOUT, "a probe task running", interval=0.5)
        airflow.kill_worker(victim["hostname"])
        survivor = next(g for g in GPU if g != victim["hostname"])

        scheduled = airflow.wait_for(lambda: finished(airflow, "scheduled"), RUN_TIMEOUT, "the scheduled run")
        reaudit = airflow.wait_for(lambda: finished(airflow, "asset_triggered"), RUN_TIMEOUT,
                                   "the asset-triggered re-audit")
        instances = task_instances(airflow, "run_id", "task_id", "map_index", "state", "hostname", "queue",
                                   "try_number")
        history = task_instances(airflow, "run_id", "task_id", "map_index", "state", "hostname", "try_number",
                                 table="task_instance_history")
    assert airflow.orphans == [], "processes outlived the stack"
    manual = next(r["run_id"] for r in airflow.dag_runs(DAG) if r["run_type"] == "manual")

    # The killed try is in the history; its retry ran on the other gpu worker and succeeded.
    killed = [h for h in history if h["task_id"] == "probe" and h["map_index"] == victim["map_index"]
              and h["run_id"] == scheduled["run_id"] and h["hostname"] == victim["hostname"]]
    assert killed and killed[0]["state"] in ("failed", "up_for_retry"), history
    retried = next(t for t in instances if t["task_id"] == "probe" and t["map_index"] == victim["map_index"]
                   and t["run_id"] == scheduled["run_id"])
    assert (retried["state"], retried["hostname"]) == ("success", survivor) and retried["try_number"] >= 2

    # Queues: the gpu workers took exactly the probe tasks; the default tasks ran on both w1 and w2.
    stacked = (scheduled["run_id"], reaudit["run_id"])
    ran = [t for t in instances if t["state"] == "success" and t["run_id"] in stacked]
    probes = [t for t in ran if t["task_id"] == "probe"]
    assert len(probes) == 2 * 3 + 3, probes     # two deployments, then one; bow, candidates and coverage each
    assert {t["queue"] for t in probes} == {"gpu"} and {t["hostname"] for t in probes} <= set(GPU)
    others = [t for t in ran if t["task_id"] != "probe"]
    assert {t["queue"] for t in others} == {"default"} and {t["hostname"] for t in others} == set(DEFAULT)

    # The story, once each: the ledger has no duplicate scores, gate events, actions or alerts.
    ledger = sa.create_engine(pg_url)
    with ledger.connect() as conn:
        runs = conn.execute(sa.text(
            "SELECT r.id, d.name, r.run_id, v.name, r.verdict FROM audit_runs r JOIN deployments d "
            "ON d.id = r.deployment_id JOIN versions v ON v.id = r.version_id ORDER BY r.id")).all()
        assert sorted(tuple(r[1:]) for r in runs if r[2] != manual) == sorted([
            (LEAKY, scheduled["run_id"], "v2", "rollback"), (QUIET, scheduled["run_id"], "v1", "pass"),
            (LEAKY, reaudit["run_id"], "v1", "pass")])
        assert conn.execute(sa.text("SELECT count(*) FROM (SELECT audit_run_id, task, probe, metric FROM scores "
                                    "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d")).scalar() == 0
        by_run = {(r[1], r[2]): r[0] for r in runs}
        assert conn.execute(sa.text("SELECT count(*) FROM scores WHERE audit_run_id = :r"),
                            {"r": by_run[(LEAKY, scheduled["run_id"])]}).scalar() == 8
        gates = conn.execute(sa.text("SELECT d.name, g.state, g.audit_run_id FROM gate_events g JOIN deployments d "
                                     "ON d.id = g.deployment_id WHERE g.audit_run_id IS NOT NULL ORDER BY g.id")).all()
        assert [tuple(g) for g in gates] == [(LEAKY, "closed", by_run[(LEAKY, scheduled["run_id"])]),
                                             (LEAKY, "open", by_run[(LEAKY, reaudit["run_id"])])]
        actions = conn.execute(sa.text("SELECT audit_run_id, kind, status FROM actions ORDER BY id")).all()
        assert [tuple(a[1:]) for a in actions if a[0] == by_run[(LEAKY, scheduled["run_id"])]] == [
            ("close_gate", "done"), ("rollback", "done"), ("reaudit", "done"), ("alert", "done")]
        assert len(actions) == len({(a[0], a[1]) for a in actions})
        alerts = conn.execute(sa.text("SELECT audit_run_id, channel, count(*) FROM alerts GROUP BY 1, 2")).all()
        assert alerts and all(a[2] == 1 for a in alerts)
        assert conn.execute(sa.text("SELECT v.name FROM deployments d JOIN versions v ON v.id = d.active_version_id "
                                    "WHERE d.name = :n"), {"n": LEAKY}).scalar() == "v1"
        assert [tuple(r[1:]) for r in runs if r[2] == manual] == [(LEAKY, manual, "v1", "pass")]
        report_paths = conn.execute(sa.text("SELECT report_path FROM audit_runs")).scalars().all()
    ledger.dispose()
    assert [m["Subject"] for m in mail_catcher.messages] == [f"[embwarden] {LEAKY} v2: rollback",
                                                              f"[embwarden] resolved: {LEAKY} v1: pass"]

    # The object store holds the reports, scores and caches, and no sample.
    keys = object_store.keys(bucket)
    assert all(p.startswith(f"s3://{CONNECTION}@{bucket}/artifacts/") for p in report_paths), report_paths
    assert sum(k.endswith("/report.html") for k in keys) == 4
    assert not [k for k in keys if k.endswith(("sample.npz", "attacker-texts.npz"))], keys
    models = [k for k in keys if k.startswith("cache/models/")]
    assert models and {k.rsplit(".", 1)[1] for k in models} == {"pkl", "digest"}
    digest = object_store.client().get_object(Bucket=bucket, Key=next(k for k in models if k.endswith("digest")))
    assert digest["Body"].read().startswith(b"hmac-sha256:")

    # The workers' own folders: nothing left but Airflow's task logs, which name no sampled text, and
    # the encoder's ONNX export (public model weights, made once per worker), and nothing of ONNX
    # Runtime's telemetry (~/.cache/Microsoft).
    exports = [w / "home" / ".cache" / "embwarden" / "onnx" for w in airflow.workers.values()]
    leftovers = [p for w, export in zip(airflow.workers.values(), exports, strict=True) for p in w.rglob("*")
                 if p.is_file() and not p.is_relative_to(w / "logs") and not p.is_relative_to(export)]
    assert leftovers == []
    assert {p.name for export in exports for p in export.rglob("*") if p.is_file()} <= {"model.onnx", "meta.json"}
    logs = "".join(p.read_text(errors="replace") for w in airflow.workers.values() for p in (w / "logs").rglob("*")
                   if p.is_file())
    assert logs and not [r["body"] for r in rows if r["body"] in logs]
