"""embedding_drift's task bodies against PostgreSQL: a passing audit leaves the reference sample;
an unchanged window passes; a window whose noise was dropped drifts, closes the gate and alerts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from audits.pipeline import EmbeddingCache
from audits.transforms import GaussianNoise
from monitors import artifacts
from monitors.config import load_config
from monitors.gates import status
from monitors.ledger.database import session_scope
from monitors.ledger.models import AuditRun, Validation
from monitors.tasks import embedding_drift, privacy_audit
from tests.helpers import messages, production_table, rows_for, write_config

AUDIT, DRIFT, DEP = "privacy_audit", "embedding_drift", "support-search"


@pytest.fixture(scope="module")
def texts_and_vectors(encoder, tmp_path_factory):
    cache = EmbeddingCache(tmp_path_factory.mktemp("prod-cache"))
    texts = messages(300, seed=21)
    return texts, cache.encode(encoder, texts)


@pytest.fixture
def setup(ledger, texts_and_vectors, model_cache, tmp_path, monkeypatch, mail_catcher):
    texts, clean = texts_and_vectors
    noisy = GaussianNoise(0.05).apply(clean[:150], np.random.default_rng(0))
    production_table(ledger, rows_for("v1", texts[:150], noisy, 1, as_bytes=False))
    path = write_config(tmp_path / "embwarden.yaml", source_url=ledger, sigma_v1=0.05, cache=model_cache)
    config = yaml.safe_load(path.read_text())
    dep = config["deployments"][DEP]
    dep["thresholds"] = {"bow_inversion.token_f1": {"warn": 0.95},     # this test is about drift
                         "drift.model_auc": {"warn": 0.65, "gate": 0.8}, "drift.norm_ks": {"warn": 0.2, "gate": 0.5}}
    dep["drift"] = {"window_hours": 24, "sample_size": 500}
    # The norm check alone would catch the dropped noise (the run would be invalid): relax it, so
    # that this test sees the drift check do the same.
    dep["validation"] = {"norm_range": [0.5, 2.0]}
    config["alerts"] = [{"kind": "email", "to": ["privacy@example.com"], "from_email": "embwarden@example.com"}]
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(path))
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", mail_catcher.connection())
    return ledger, texts, clean


def run_all(dag_id: str, run_id: str, **sample_args) -> dict:
    tasks = embedding_drift if dag_id == DRIFT else privacy_audit
    if dag_id == DRIFT:
        ref = embedding_drift.window(DEP, dag_id, run_id, **sample_args)
        tasks.validate(DEP, dag_id, run_id)
        embedding_drift.drift(DEP, dag_id, run_id)
    else:
        ref = privacy_audit.sample(DEP, dag_id, run_id, **sample_args)
        tasks.validate(DEP, dag_id, run_id)
        for job in privacy_audit.probe_jobs([DEP], dag_id, run_id):
            privacy_audit.probe(job["ref"], job["probe"])
    for step in (tasks.record, tasks.evaluate, tasks.act, tasks.write_report, tasks.cleanup):
        step(DEP, dag_id, run_id)
    return ref


def scores_of(audit_run_id: int) -> dict[str, float]:
    with session_scope() as session:
        return {s.key: s.value for s in session.get(AuditRun, audit_run_id).scores}


def test_a_dropped_transform_drifts_and_closes_the_gate(setup, mail_catcher):
    ledger, texts, clean = setup
    assert not embedding_drift.has_reference(DEP)
    run_all(AUDIT, "audit-1")                                        # v1 passes: its sample is the reference
    assert embedding_drift.has_reference(DEP)
    config = load_config()
    reference = artifacts.read_reference(config.resolve(config.artifacts.root), DEP, "v1")
    assert reference.shape == (120, 384)

    steady = run_all(DRIFT, "drift-1", window_end=time.time())       # the same pipeline: no drift
    with session_scope() as session:
        run = session.get(AuditRun, steady["audit_run_id"])
        assert run.verdict == "pass", scores_of(run.id)
        assert session.scalar(sa.select(Validation.success).where(Validation.audit_run_id == run.id))
    assert not (Path(steady["artifact_dir"]) / "drift.html").exists()   # drawn only when it drifts

    # Production starts storing v1 vectors without their noise; the older rows leave the window.
    engine = sa.create_engine(ledger)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE prod_vectors SET created_at = :t"), {"t": datetime.now(UTC) - timedelta(days=3)})
    engine.dispose()
    production_table(ledger, rows_for("v1", texts[150:], clean[150:], 1000, as_bytes=False))
    drifted = run_all(DRIFT, "drift-2", window_end=time.time())
    scores = scores_of(drifted["audit_run_id"])
    assert scores["drift.norm_ks"] > 0.9 and scores["drift.model_auc"] > 0.8
    with session_scope() as session:
        assert session.get(AuditRun, drifted["audit_run_id"]).verdict == "gate"
        gate = status(session, DEP)
        assert gate.state == "closed" and gate.reason.startswith("drift.") and gate.actor == DRIFT
    assert mail_catcher.messages[-1]["Subject"] == "[embwarden] support-search v1: gate"
    report = (Path(drifted["artifact_dir"]) / "report.html").read_text()
    assert 'href="drift.html"' in report and "drift.norm_ks" in report
    assert (Path(drifted["artifact_dir"]) / "drift.html").stat().st_size > 1000
