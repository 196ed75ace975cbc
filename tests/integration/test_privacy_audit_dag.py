"""privacy_audit end to end: real Airflow (`airflow dags test`), PostgreSQL for both Airflow's
metadata and the ledger, the ledger reached through the Airflow connection `embwarden_db`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from audits.pipeline import EmbeddingCache
from audits.transforms import GaussianNoise
from tests.helpers import messages, migrated_airflow, production_table, rows_for, write_config

pytestmark = pytest.mark.integration
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture
def airflow_env(pg_url, pg_admin_url, tmp_path, encoder, mail_catcher):
    """An Airflow home on a PostgreSQL metadata database, and a ledger + production table in another."""
    cache = EmbeddingCache(tmp_path / "cache")
    texts_v1, texts_v2 = messages(150, seed=11), messages(150, seed=12)
    v1 = GaussianNoise(0.2).apply(cache.encode(encoder, texts_v1), np.random.default_rng(0))
    rows = (rows_for("v1", texts_v1, v1, 1, as_bytes=False)
            + rows_for("v2", texts_v2, cache.encode(encoder, texts_v2), 1001, as_bytes=False))
    production_table(pg_url, rows)
    probes = {"candidate_inversion": {"candidates": 20, "max_trials": 10, "bootstrap_resamples": 200}}
    config = write_config(tmp_path / "embwarden.yaml", source_url=pg_url, cache=tmp_path / "cache", probes=probes)
    with config.open("a") as f:   # alerts by mail, through the Airflow connection embwarden_smtp
        f.write("alerts:\n  - {kind: email, to: [privacy@example.com], from_email: embwarden@example.com}\n")
    with migrated_airflow(pg_admin_url, pg_url, tmp_path / "airflow", config,
                          AIRFLOW_CONN_EMBWARDEN_SMTP=mail_catcher.connection()) as (env, metadata_url):
        yield env, rows, metadata_url


def dags_test(env, dag_id: str = "privacy_audit", conf: dict | None = None) -> subprocess.CompletedProcess:
    conf = {"deployment": "support-search"} if conf is None else conf
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)],
                          env=env, capture_output=True, text=True, timeout=600)


def test_leaky_deployment_is_gated_and_rolled_back_through_airflow(airflow_env, pg_url, mail_catcher):
    env, rows, metadata_url = airflow_env
    from monitors.cli import main as cli

    first = dags_test(env)
    assert first.returncode == 0, first.stdout[-3000:]
    os.environ["EMBWARDEN_DB_URL"] = pg_url   # the CLI, like an operator, deploys v2
    try:
        assert cli(["activate", "support-search", "v2", "--reason", "deploy v2"]) == 0
    finally:
        del os.environ["EMBWARDEN_DB_URL"]
    second = dags_test(env)
    assert second.returncode == 0, second.stdout[-3000:]

    ledger = sa.create_engine(pg_url)
    with ledger.connect() as conn:
        audit_runs = conn.execute(sa.text(
            "SELECT r.id, v.name, r.status, r.verdict, r.report_path FROM audit_runs r "
            "JOIN versions v ON v.id = r.version_id ORDER BY r.id")).all()
        assert [(r[1], r[2], r[3]) for r in audit_runs] == [("v1", "succeeded", "pass"),
                                                           ("v2", "succeeded", "rollback")]
        # Two probes, each its own mapped task: bag-of-words on the sample, candidates on canaries; and
        # the coverage check of the sample by the attacker's corpus.
        assert conn.execute(sa.text("SELECT probe, target, count(*) FROM scores GROUP BY probe, target "
                                    "ORDER BY probe")).all() == [("bow_inversion", "sample", 6),
                                                                 ("candidate_inversion", "canaries", 6),
                                                                 ("coverage", "sample", 4)]
        assert conn.execute(sa.text(
            "SELECT v.name FROM deployments d JOIN versions v ON v.id = d.active_version_id")).scalar() == "v1"
        assert conn.execute(sa.text("SELECT state FROM gate_events ORDER BY id DESC LIMIT 1")).scalar() == "closed"
        kinds = conn.execute(sa.text("SELECT kind, status FROM actions WHERE audit_run_id = :r ORDER BY id"),
                             {"r": audit_runs[1][0]}).all()
        assert [tuple(k) for k in kinds] == [("close_gate", "done"), ("rollback", "done"), ("reaudit", "done"),
                                             ("alert", "done")]
    ledger.dispose()
    # The alert went out by mail through Airflow's SmtpNotifier and the connection.
    assert [m["Subject"] for m in mail_catcher.messages] == ["[embwarden] support-search v2: rollback"]
    # The re-audit was asked for with an Asset event naming the deployment and the restored version.
    meta = sa.create_engine(metadata_url)
    with meta.connect() as conn:
        extras = conn.execute(sa.text("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                                      "WHERE a.name = 'embwarden_reaudit'")).scalars().all()
    meta.dispose()
    assert [(json.loads(e) if isinstance(e, str) else e)["version"] for e in extras] == ["v1"]

    # The auditor must not become the leak: nothing sampled in XCom, logs or the report.
    meta = sa.create_engine(metadata_url)
    with meta.connect() as conn:
        xcoms = [json.dumps(v, default=str) for v in conn.execute(sa.text("SELECT value FROM xcom")).scalars()]
    meta.dispose()
    assert xcoms, "the run should have pushed references through XCom"
    logs = "".join(p.read_text(errors="replace") for p in Path(env["AIRFLOW_HOME"]).rglob("*.log"))
    report = Path(audit_runs[1][4]).read_text()
    haystack = "\n".join(xcoms) + first.stdout + second.stdout + logs + report
    for row in rows:
        assert row["body"] not in haystack
    assert f"{rows[0]['embedding'][0]:.6f}" not in "\n".join(xcoms)
    assert not list(Path(audit_runs[1][4]).parent.glob("sample.npz"))

    # The run that event starts (the scheduler does that; here `dags test` stands in for it)
    # audits v1, which passes: the gate reopens and the incident is resolved by mail.
    third = dags_test(env)
    assert third.returncode == 0, third.stdout[-3000:]
    ledger = sa.create_engine(pg_url)
    with ledger.connect() as conn:
        last = conn.execute(sa.text("SELECT v.name, r.verdict FROM audit_runs r JOIN versions v ON v.id = r.version_id "
                                    "ORDER BY r.id DESC LIMIT 1")).one()
        assert tuple(last) == ("v1", "pass")
        assert conn.execute(sa.text("SELECT state FROM gate_events ORDER BY id DESC LIMIT 1")).scalar() == "open"
    assert mail_catcher.messages[-1]["Subject"] == "[embwarden] resolved: support-search v1: pass"

    # embedding_drift: v1's passing audit left its reference sample; the window drawn from the same
    # pipeline does not drift.
    drift = dags_test(env, "embedding_drift", {})
    assert drift.returncode == 0, drift.stdout[-3000:]
    with ledger.connect() as conn:
        checked = conn.execute(sa.text("SELECT r.verdict, count(s.id) FROM audit_runs r JOIN scores s "
                                       "ON s.audit_run_id = r.id WHERE r.dag_id = 'embedding_drift' "
                                       "GROUP BY r.id, r.verdict")).all()
        assert [tuple(c) for c in checked] == [("pass", 3)]

    # privacy_gate: a person closes the gate from the Params form, with a reason; bad params are refused.
    closed = dags_test(env, "privacy_gate", {"deployment": "support-search", "action": "close_gate",
                                             "reason": "incident 7: vendor asked us to pause"})
    assert closed.returncode == 0, closed.stdout[-3000:]
    refused = dags_test(env, "privacy_gate", {"deployment": "support-search", "action": "close_gate",
                                              "reason": "short"})
    assert refused.returncode != 0 and "reason" in (refused.stdout + refused.stderr)
    with ledger.connect() as conn:
        gate = conn.execute(sa.text("SELECT state, reason, actor FROM gate_events ORDER BY id DESC LIMIT 1")).one()
        assert gate[:2] == ("closed", "incident 7: vendor asked us to pause") and gate[2].startswith("privacy_gate/")
        assert conn.execute(sa.text("SELECT count(*) FROM actions WHERE kind = 'close_gate' AND audit_run_id IS NULL"
                                    )).scalar() == 1

    # An audit that cannot judge (a NaN vector: the sample is invalid) ends the DAG run failed in
    # Airflow's grid, not green with one red task; the report and the cleanup still run.
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE prod_vectors SET embedding[3] = 'NaN' WHERE version = 'v1'"))
    invalid = dags_test(env)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT verdict FROM audit_runs ORDER BY id DESC LIMIT 1")).scalar() == "invalid"
    meta = sa.create_engine(metadata_url)
    with meta.connect() as conn:
        run_id, state = conn.execute(sa.text("SELECT run_id, state FROM dag_run WHERE dag_id = 'privacy_audit' "
                                             "ORDER BY id DESC LIMIT 1")).one()
        tasks = dict(conn.execute(sa.text("SELECT task_id, state FROM task_instance WHERE dag_id = 'privacy_audit' "
                                          "AND run_id = :r AND map_index <= 0"), {"r": run_id}).all())
    meta.dispose()
    assert state == "failed", invalid.stdout[-3000:]
    assert (tasks["validate"], tasks["report"], tasks["cleanup"], tasks["outcome"]) == (
        "failed", "success", "success", "failed"), tasks
    assert "could not judge support-search: invalid" in invalid.stdout + invalid.stderr
    ledger.dispose()
