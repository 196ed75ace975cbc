"""A deployment of real, non-templated text: the synthetic attacker is inconclusive, the in-domain one judges.

The production table holds literary quotations (GCIDE) embedded by unprotected MiniLM. With the
default synthetic corpus the attacker knows none of it: coverage says so and the run is
`inconclusive` (an alert, never a pass). With `auxiliary_corpus: {kind: production}` the attacker
trains on a slice of the deployment's own texts, disjoint from the sample, and its score crosses
the gate. That slice and everything fitted on it stay inside the run's folder and are deleted.
"""

import json
import logging
import random
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from airflow.sdk.exceptions import AirflowFailException

from audits import general
from audits.errors import ConfigError
from audits.pipeline import EmbeddingCache
from monitors import auxiliary_corpus
from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.gates import gate_state
from monitors.ledger.database import session_scope
from monitors.ledger.models import Action, AlertRecord, AuditRun, Deployment
from monitors.tasks import privacy_audit
from tests.helpers import production_table, rows_for, write_config

DAG = "privacy_audit"
DEP = "support-search"
SAMPLE, SLICE = 150, 600
GATE = {"bow_inversion.token_f1": {"warn": 0.08, "gate": 0.1}}


@pytest.fixture(scope="module")
def quotations(encoder, tmp_path_factory):
    """900 real quotations and their unprotected MiniLM vectors, as rows of version v2."""
    texts = general._read(["gcide"])
    random.Random(3).shuffle(texts)
    texts = texts[:900]
    vectors = EmbeddingCache(tmp_path_factory.mktemp("quotes-cache")).encode(encoder, texts)
    return rows_for("v2", texts, vectors, 1, as_bytes=False)


@pytest.fixture
def deployment(ledger, quotations, tmp_path, monkeypatch):
    production_table(ledger, quotations)

    def configure(corpus: dict) -> Path:
        path = write_config(tmp_path / "embwarden.yaml", source_url=ledger, sample_size=SAMPLE, thresholds=GATE,
                            cache=tmp_path / "cache")
        data = yaml.safe_load(path.read_text())
        dep = data["deployments"][DEP]
        dep.update(active_version="v2", auxiliary_corpus=corpus, canaries={"count": 0})
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        monkeypatch.setenv("EMBWARDEN_CONFIG", str(path))
        return path
    return configure


def audit(run_id: str) -> tuple[dict, list]:
    """The DAG's tasks in order; what they returned (their XCom)."""
    returned = [privacy_audit.list_deployments(), privacy_audit.sample(DEP, DAG, run_id),
                privacy_audit.validate(DEP, DAG, run_id)]
    for job in privacy_audit.probe_jobs([DEP], DAG, run_id):
        returned.append(privacy_audit.probe(job["ref"], job["probe"]))
    for step in (privacy_audit.record, privacy_audit.evaluate, privacy_audit.act, privacy_audit.write_report,
                 privacy_audit.cleanup):
        returned.append(step(DEP, DAG, run_id))
    return returned[1], returned


def scores_of(run: AuditRun) -> dict[str, float]:
    return {s.key: s.value for s in run.scores}


def test_a_synthetic_attacker_on_real_text_is_inconclusive_never_a_pass(deployment, caplog):
    deployment({"kind": "synthetic", "size": 600, "seed": 1})
    caplog.set_level(logging.WARNING, logger="embwarden.alerts")
    ref, _ = audit("run-1")
    with session_scope() as session:
        run = session.get(AuditRun, ref["audit_run_id"])
        scores = scores_of(run)
        assert run.verdict == "inconclusive", scores
        assert scores["bow_inversion.token_f1"] < GATE["bow_inversion.token_f1"]["warn"]   # "no leak", falsely
        assert scores["coverage.embedding"] < 0.1 and scores["coverage.vocabulary"] < 0.15
        assert gate_state(session, session.scalar(sa.select(Deployment))).state == "open"   # fail_open
        alert = session.scalar(sa.select(AlertRecord).where(AlertRecord.audit_run_id == run.id))
        assert alert.payload["verdict"] == "inconclusive"
        assert "did not know this kind of text" in alert.payload["detail"]
        assert "kind: production" in alert.payload["detail"]
    assert any("inconclusive" in r.getMessage() for r in caplog.records)
    report = (Path(ref["artifact_dir"]) / "report.html").read_text()
    assert 'id="coverage"' in report and "did not know this kind of text" in report
    assert "not covered" in report


def test_fail_closed_closes_the_gate_on_an_inconclusive_audit(deployment):
    path = deployment({"kind": "synthetic", "size": 600, "seed": 1})
    data = yaml.safe_load(path.read_text())
    data["deployments"][DEP]["on_audit_error"] = "fail_closed"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    ref, _ = audit("run-1")
    with session_scope() as session:
        gate = gate_state(session, session.scalar(sa.select(Deployment)))
        assert gate.state == "closed" and "does not cover the sample" in gate.reason


def test_an_in_domain_attacker_from_production_text_crosses_the_gate_and_leaves_nothing(deployment, quotations,
                                                                                      tmp_path, caplog):
    deployment({"kind": "production", "size": SLICE, "seed": 1})
    caplog.set_level(logging.DEBUG)
    ref, returned = audit("run-1")
    folder = Path(ref["artifact_dir"])
    with session_scope() as session:
        run = session.get(AuditRun, ref["audit_run_id"])
        scores = scores_of(run)
        assert scores["coverage.embedding"] > 0.5 and scores["coverage.vocabulary"] > 0.2, scores
        assert run.verdict == "gate", scores
        assert scores["bow_inversion.token_f1"] >= GATE["bow_inversion.token_f1"]["gate"]
        assert gate_state(session, session.scalar(sa.select(Deployment))).state == "closed"
        assert session.scalar(sa.select(Action.status).where(Action.kind == "close_gate")) == "done"

    # Nothing of the production slice outlives the run or leaves its folder: not in the shared cache,
    # the report, the logs or what the tasks returned (XCom).
    assert not (folder / auxiliary_corpus.PRODUCTION_FILE).exists()
    assert not (folder / auxiliary_corpus.RUN_CACHE).exists()
    assert not any((tmp_path / "cache").rglob("*")), "the shared cache must hold nothing fitted on production text"
    texts = [row["body"] for row in quotations]
    haystack = "\n".join([json.dumps(returned, default=str), caplog.text,
                          *(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())])
    leaked = [t for t in texts if t in haystack]
    assert not leaked, f"{len(leaked)} production texts leaked, e.g. {leaked[0]!r}"


def test_the_production_slice_is_disjoint_from_the_sample_and_owner_only(deployment):
    deployment({"kind": "production", "size": SLICE, "seed": 1})
    privacy_audit.list_deployments()
    ref = privacy_audit.sample(DEP, DAG, "run-1")
    folder = Path(ref["artifact_dir"])
    from monitors import artifacts

    drawn = artifacts.read_sample(folder)
    slice_ = auxiliary_corpus.read_production(folder)
    assert len(slice_) == SLICE and not set(slice_) & set(drawn.texts)
    assert (folder / auxiliary_corpus.PRODUCTION_FILE).stat().st_mode & 0o077 == 0
    privacy_audit.cleanup(DEP, DAG, "run-1")
    assert not (folder / auxiliary_corpus.PRODUCTION_FILE).exists()


def test_a_production_corpus_needs_a_text_column_and_enough_texts(deployment, capsys):
    path = deployment({"kind": "production", "size": 800, "seed": 1})
    too_many = (r"support-search\.auxiliary_corpus: kind production asks for 800 texts besides a sample of 150, "
                r"but column 'body' of version v2 has 900")
    assert cli(["sync"]) == 2
    assert re.search(too_many, capsys.readouterr().err)
    privacy_audit.list_deployments()
    with pytest.raises(AirflowFailException, match=too_many):   # the run fails once, before drawing anything
        privacy_audit.sample(DEP, DAG, "run-1")
    with session_scope() as session:
        assert session.scalar(sa.select(AuditRun.status)) == "failed"
    data = yaml.safe_load(path.read_text())
    del data["deployments"][DEP]["source"]["columns"]["text"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"deployments\.support-search: .*kind production .* source\.columns\.text "
                                          "is not set"):
        load_config(path)
    assert cli(["sync"]) == 2
    assert "source.columns.text is not set" in capsys.readouterr().err


def test_a_general_corpus_without_its_package_says_what_to_install(deployment, monkeypatch, tmp_path):
    deployment([{"kind": "general", "size": 1000}, {"kind": "synthetic", "size": 100}])
    monkeypatch.setattr(general, "WORDNET_DIR", tmp_path / "no-wordnet")
    privacy_audit.list_deployments()
    with pytest.raises(AirflowFailException, match=r"wordnet-base: install them with `sudo apt-get install "
                                                   r"wordnet-base`"):
        privacy_audit.sample(DEP, DAG, "run-1")
    config = load_config()
    assert config.deployment(DEP).auxiliary_corpus.kind == "mixed"


def test_an_audit_whose_coverage_was_not_measured_does_not_pass(deployment, monkeypatch):
    path = deployment({"kind": "production", "size": SLICE, "seed": 1})
    data = yaml.safe_load(path.read_text())
    data["deployments"][DEP]["thresholds"] = {"bow_inversion.token_f1": {"gate": 0.95}}   # would pass
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    real_probe = privacy_audit.probe

    def coverage_fails(ref, name):
        if name == "coverage":
            raise RuntimeError("the coverage task's worker died")
        return real_probe(ref, name)

    monkeypatch.setattr(privacy_audit, "probe", coverage_fails)
    privacy_audit.list_deployments()
    ref = privacy_audit.sample(DEP, DAG, "run-1")
    privacy_audit.validate(DEP, DAG, "run-1")
    for job in privacy_audit.probe_jobs([DEP], DAG, "run-1"):
        try:
            privacy_audit.probe(job["ref"], job["probe"])
        except RuntimeError:
            pass
    for step in (privacy_audit.record, privacy_audit.evaluate, privacy_audit.act, privacy_audit.write_report,
                 privacy_audit.cleanup):
        step(DEP, DAG, "run-1")
    with session_scope() as session:
        run = session.get(AuditRun, ref["audit_run_id"])
        assert run.verdict == "inconclusive" and "coverage: no result" in run.error
        alert = session.scalar(sa.select(AlertRecord).where(AlertRecord.audit_run_id == run.id))
        assert "Coverage could not be measured" in alert.payload["detail"]
    assert "Coverage could not be measured" in (Path(ref["artifact_dir"]) / "report.html").read_text()
