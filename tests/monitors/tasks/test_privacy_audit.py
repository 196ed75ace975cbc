"""The privacy_audit task bodies, called in order against a PostgreSQL ledger and source."""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from audits import corpora
from audits.errors import SourceError
from audits.pipeline import EmbeddingCache
from audits.transforms import GaussianNoise
from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.gates import gate_state
from monitors.ledger.database import session_scope
from monitors.ledger.models import Action, AuditRun, Deployment, GateEvent, Score
from monitors.ledger.registry import sync
from monitors.tasks import privacy_audit
from monitors.tasks.common import RETRYABLE
from monitors.versions import activate
from tests.conftest import REPO
from tests.helpers import messages, production_table, rows_for, write_config

DAG = "privacy_audit"


@pytest.fixture(scope="module")
def production_rows(encoder, tmp_path_factory):
    """150 messages embedded by v1 (noise 0.2) and 150 others by v2 (no noise), as PostgreSQL rows."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("prod-cache"))
    texts_v1, texts_v2 = messages(150, seed=11), messages(150, seed=12)
    v1 = GaussianNoise(0.2).apply(cache.encode(encoder, texts_v1), np.random.default_rng(0))
    v2 = cache.encode(encoder, texts_v2)
    return rows_for("v1", texts_v1, v1, 1, as_bytes=False) + rows_for("v2", texts_v2, v2, 1001, as_bytes=False)


@pytest.fixture
def setup(ledger, production_rows, model_cache, tmp_path, monkeypatch):
    production_table(ledger, production_rows)
    config = write_config(tmp_path / "embwarden.yaml", source_url=ledger, cache=model_cache)
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(config))
    return tmp_path


DEP = "support-search"


def run_sql(url: str, *statements: str) -> None:
    """Change the production table as an operator (or an accident) would, in one transaction."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def probe_all(run_id: str) -> None:
    for job in privacy_audit.probe_jobs([DEP], DAG, run_id):
        privacy_audit.probe(job["ref"], job["probe"])


def audit(run_id: str) -> dict:
    """The DAG's tasks in order, as Airflow runs them for one deployment."""
    ref = privacy_audit.sample(DEP, DAG, run_id)
    privacy_audit.validate(DEP, DAG, run_id)
    probe_all(run_id)
    for step in (privacy_audit.record, privacy_audit.evaluate, privacy_audit.act, privacy_audit.write_report,
                 privacy_audit.cleanup):
        step(DEP, DAG, run_id)
    return ref


def test_leaky_version_is_gated_and_rolled_back(setup, production_rows, capsys):
    first = audit("run-1")
    with session_scope() as session:
        run = session.get(AuditRun, first["audit_run_id"])
        assert (run.version.name, run.status, run.verdict, run.sample_size) == ("v1", "succeeded", "pass", 120)
        assert {s.key for s in run.scores} == {"bow_inversion.token_precision", "bow_inversion.token_recall",
                                               "bow_inversion.token_f1", "coverage.embedding", "coverage.vocabulary"}
        activate(session, "support-search", "v2", actor="test", reason="deploy v2")
    assert privacy_audit.outcome([DEP], DAG, "run-1") == {DEP: "pass"}

    second = audit("run-2")
    with session_scope() as session:
        run = session.get(AuditRun, second["audit_run_id"])
        f1 = next(s for s in run.scores if s.metric == "token_f1")
        assert run.version.name == "v2" and run.verdict == "rollback" and f1.value >= 0.55
        assert run.thresholds["bow_inversion.token_f1"]["rollback"] == 0.55
        dep = session.scalar(sa.select(Deployment))
        assert dep.active_version.name == "v1"
        gate = gate_state(session, dep)
        assert gate.state == "closed" and gate.reason.startswith("bow_inversion.token_f1 = 0.")
        assert "crossed rollback threshold 0.55 (version v2" in gate.reason
        acts = session.scalars(sa.select(Action).where(Action.audit_run_id == run.id).order_by(Action.id)).all()
        assert [(a.kind, a.status) for a in acts] == [("close_gate", "done"), ("rollback", "done"),
                                                      ("reaudit", "pending"), ("alert", "done")]
        assert acts[1].detail == {"from": "v2", "to": "v1"}

    folder = Path(second["artifact_dir"])
    assert not (folder / "sample.npz").exists()               # production data deleted with the run
    report = (folder / "report.html").read_text() + (folder / "report.json").read_text()
    assert "rollback" in report
    assert "An attacker who holds these vectors names" in report and "This version adds no protection" in report
    assert 'id="m-bow_inversion.token_f1"' in report    # the metric names link to what they mean
    for row in production_rows:                              # no sampled text leaks into the report
        assert row["body"] not in report
    # What the attacker recovered is shown on canaries only, every secret by its kind.
    examples = json.loads((folder / "report.json").read_text())["examples"]["bow_inversion"]
    assert len(examples) == 3 and all("secrets" in e and "recovered" in e for e in examples)
    for secrets in corpora.canaries(60, 7).secrets:
        for value in secrets.values():   # as a word of its own: "3554" may sit inside a float's digits
            assert not re.search(rf"(?<![\w.]){re.escape(value)}(?!\w)", report), f"a canary's secret: {value}"

    # `embwarden report RUN_ID` prints the path, and renders the report again when it is gone.
    (folder / "report.html").unlink()
    assert cli(["report", str(second["audit_run_id"])]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "report.html")
    assert "rollback" in (folder / "report.html").read_text()

    # `embwarden status`: the gate, the last run's id, time, verdict, judged scores and report path.
    assert cli(["status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("support-search: gate closed (bow_inversion.token_f1 = 0.") and "active version v1" in out
    assert re.search(rf"last audit: run {second['audit_run_id']} \(privacy_audit\), \d{{4}}-\d\d-\d\d \d\d:\d\d UTC, "
                     r"version v2: rollback", out), out
    assert re.search(r"bow_inversion.token_f1 0\.\d{3} \(warn=0.45 gate=0.5 rollback=0.55\): rollback", out), out
    assert f"report: {folder / 'report.html'} (embwarden report {second['audit_run_id']})" in out


def test_a_retried_task_does_not_duplicate_rows_or_side_effects(setup, caplog):
    audit("run-1")
    with session_scope() as session:
        activate(session, "support-search", "v2", actor="test", reason="deploy v2")
    caplog.set_level(logging.WARNING, logger="embwarden.alerts")
    ref = audit("run-2")
    for step in (privacy_audit.record, privacy_audit.evaluate, privacy_audit.act):     # Airflow retries each of these
        step(DEP, DAG, "run-2")
    privacy_audit.sample("support-search", DAG, "run-2")              # even the first task, with the same sample
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditRun)) == 2
        assert session.scalar(sa.select(sa.func.count()).select_from(Score)
                              .where(Score.audit_run_id == ref["audit_run_id"])) == 5   # bow 3, coverage 2
        assert session.scalar(sa.select(sa.func.count()).select_from(GateEvent)
                              .where(GateEvent.audit_run_id == ref["audit_run_id"])) == 1
    assert sum("crossed rollback threshold" in r.getMessage() for r in caplog.records) == 1


def test_rollback_without_a_passing_version_keeps_the_gate_closed(setup):
    with session_scope() as session:
        sync(session, load_config())
        activate(session, "support-search", "v2", actor="test", reason="deploy v2 unaudited")
    with pytest.raises(AirflowFailException, match="no other version has passed an audit"):
        audit("run-1")
    with session_scope() as session:
        dep = session.scalar(sa.select(Deployment))
        assert gate_state(session, dep).state == "closed" and dep.active_version.name == "v2"
        rollback = session.scalar(sa.select(Action).where(Action.kind == "rollback"))
        assert rollback.status == "failed" and "no other version" in rollback.error
        # No re-audit of the version just judged: it would fail the same way, and ask again, forever.
        reaudit = session.scalar(sa.select(Action).where(Action.kind == "reaudit"))
        assert reaudit.status == "failed" and "the rollback did not happen" in reaudit.error
    assert privacy_audit.reaudit_requests([DEP], DAG, "run-1") == []


def test_a_nan_vector_makes_the_run_invalid_and_records_no_scores(setup, ledger):
    run_sql(ledger, "UPDATE prod_vectors SET embedding[7] = 'NaN' WHERE id = 42",
            "DELETE FROM prod_vectors WHERE version = 'v1' AND id > 100")
    ref = privacy_audit.sample("support-search", DAG, "run-1")
    failed = r"expect_column_values_to_be_between\(nonfinite\): 1 failing rows 42"
    with pytest.raises(AirflowFailException, match=failed):
        privacy_audit.validate("support-search", DAG, "run-1")
    assert privacy_audit.probe_jobs([DEP], DAG, "run-1") == []                 # no probe runs on a broken sample
    assert not (Path(ref["artifact_dir"]) / "sample.npz").exists()
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun))
        assert (run.status, run.verdict) == ("invalid", "invalid") and "rows 42" in run.error
        assert session.scalar(sa.select(sa.func.count()).select_from(Score)) == 0


def test_repeated_ids_in_a_table_without_a_primary_key_make_the_run_invalid(setup, ledger):
    """Rows sharing an id all reach validation (they used to be collapsed into one, and the run passed)."""
    run_sql(ledger, "ALTER TABLE prod_vectors DROP CONSTRAINT prod_vectors_pkey",
            "INSERT INTO prod_vectors SELECT * FROM prod_vectors WHERE version = 'v1' AND id % 3 = 0")
    privacy_audit.sample(DEP, DAG, "run-1")
    with pytest.raises(AirflowFailException, match=r"expect_column_values_to_be_unique\(id\): \d+ failing rows \d+"):
        privacy_audit.validate(DEP, DAG, "run-1")
    assert privacy_audit.probe_jobs([DEP], DAG, "run-1") == []
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun))
        assert (run.status, run.verdict) == ("invalid", "invalid")
        repeated = [int(i) for i in re.search(r"unique\(id\): \d+ failing rows ([\d, ]+)", run.error)[1].split(", ")]
        assert repeated and all(i % 3 == 0 for i in repeated), run.error
    with pytest.raises(AirflowFailException, match="could not judge support-search: invalid"):
        privacy_audit.outcome([DEP], DAG, "run-1")    # the DAG run ends failed, not green


@pytest.mark.parametrize(("change", "message"), [
    ("DROP TABLE prod_vectors", r"table 'prod_vectors'.* does not exist"),
    ("ALTER TABLE prod_vectors RENAME COLUMN body TO text", r"source.columns.text: column 'body' not found"),
])
def test_a_misconfigured_source_fails_the_run_at_once_without_retries(setup, ledger, change, message):
    """A missing table or column will be as missing on a retry: Airflow must not wait out 2 x 5 minutes."""
    run_sql(ledger, change)
    with pytest.raises(AirflowFailException, match=message):
        privacy_audit.sample("support-search", DAG, "run-1")
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun))
        assert run.status == "failed" and run.verdict is None and re.search(message, run.error)
        assert RETRYABLE not in run.error


def test_an_unreachable_source_is_retried(setup, tmp_path, monkeypatch):
    config = write_config(tmp_path / "down.yaml", source_url="postgresql://postgres@127.0.0.1:1/x")
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(config))
    with pytest.raises(SourceError, match="cannot reach"):
        privacy_audit.sample("support-search", DAG, "run-1")
    with session_scope() as session:
        assert session.scalar(sa.select(AuditRun.error)).startswith(f"{RETRYABLE} sample: SourceUnavailable")


def test_an_unexpected_error_keeps_airflow_retries_and_a_run_without_scores_fails(setup):
    ref = privacy_audit.sample("support-search", DAG, "run-1")
    privacy_audit.validate(DEP, DAG, "run-1")
    (Path(ref["artifact_dir"]) / "sample.npz").unlink()   # e.g. a worker lost its disk between tasks
    assert privacy_audit.probe_jobs([DEP], DAG, "run-1") == []
    with pytest.raises(FileNotFoundError):
        privacy_audit.probe(ref, "bow_inversion")                    # not an EmbwardenError: Airflow retries it
    privacy_audit.sample("support-search", DAG, "run-1")               # the retry redraws the same sample
    privacy_audit.validate(DEP, DAG, "run-1")
    probe_all("run-1")
    privacy_audit.record(DEP, DAG, "run-1")
    privacy_audit.evaluate(DEP, DAG, "run-1")
    with session_scope() as session:
        run = session.get(AuditRun, ref["audit_run_id"])
        assert (run.status, run.error, run.verdict) == ("succeeded", None, "pass")

    privacy_audit.sample("support-search", DAG, "run-2")
    with pytest.raises(AirflowFailException, match="no probe produced scores"):
        privacy_audit.record(DEP, DAG, "run-2")                        # its probe tasks never ran
    with pytest.raises(AirflowSkipException):
        privacy_audit.evaluate(DEP, DAG, "run-2")
    privacy_audit.write_report(DEP, DAG, "run-2")                      # a failed run still gets its report
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun).where(AuditRun.run_id == "run-2"))
        assert run.status == "failed" and "bow_inversion: no result" in run.error


def test_probes_run_apart_score_canaries_when_the_sample_lacks_secrets_and_one_failing_loses_nothing(
        ledger, production_rows, model_cache, tmp_path, monkeypatch):
    production_table(ledger, production_rows)
    probes = {"candidate_inversion": {"candidates": 20, "max_trials": 10, "bootstrap_resamples": 200},
              "attribute_inference": {"attribute": "has_pancreas"}}     # no text mentions one: it fails
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(write_config(tmp_path / "embwarden.yaml", source_url=ledger,
                                                            cache=model_cache, probes=probes)))
    ref = privacy_audit.sample(DEP, DAG, "run-1")
    privacy_audit.validate(DEP, DAG, "run-1")
    jobs = privacy_audit.probe_jobs([DEP], DAG, "run-1")
    assert [j["probe"] for j in jobs] == ["bow_inversion", "candidate_inversion", "attribute_inference",
                                            "coverage"]
    failures = []
    for job in jobs:                                        # each its own task: one failing stops no other
        try:
            privacy_audit.probe(job["ref"], job["probe"])
        except AirflowFailException as exc:
            failures.append(str(exc))
    assert len(failures) == 1 and re.search("attribute_inference: ProbeError: .*has one value", failures[0])
    for step in (privacy_audit.record, privacy_audit.evaluate, privacy_audit.act, privacy_audit.write_report):
        step(DEP, DAG, "run-1")
    with session_scope() as session:
        run = session.get(AuditRun, ref["audit_run_id"])
        targets = {(s.probe, s.target) for s in run.scores}
        assert targets == {("bow_inversion", "sample"), ("candidate_inversion", "canaries"), ("coverage", "sample")}
        assert {s.metric for s in run.scores if s.probe == "candidate_inversion"} == {"top1", "top5", "exposure_bits"}
        # What the failed probe would have found is unknown: never a pass (it used to be one).
        assert run.status == "succeeded" and run.verdict == "inconclusive"
        assert run.error.startswith("attribute_inference: ProbeError")
    report = (Path(ref["artifact_dir"]) / "report.html").read_text()
    assert "Probes that failed" in report and "canaries" in report
    assert "Inconclusive: The probe attribute_inference failed" in report
    with pytest.raises(AirflowFailException, match="could not judge support-search: inconclusive"):
        privacy_audit.outcome([DEP], DAG, "run-1")


def test_a_retried_step_resumes_the_run_after_a_transient_error(setup):
    """A step that failed on something passing (a lost file, a ledger blip) keeps Airflow's retries,
    and its retry carries the run on instead of skipping it as stopped."""
    ref = privacy_audit.sample(DEP, DAG, "run-1")
    sample_file = Path(ref["artifact_dir"]) / "sample.npz"
    aside = sample_file.with_suffix(".aside")
    sample_file.rename(aside)                                # e.g. a network share that hiccuped
    with pytest.raises(FileNotFoundError):
        privacy_audit.validate(DEP, DAG, "run-1")
    with session_scope() as session:
        run = session.get(AuditRun, ref["audit_run_id"])
        assert run.status == "failed" and run.error.startswith("(retryable) validate: FileNotFoundError")
    with pytest.raises(AirflowSkipException):
        privacy_audit.record(DEP, DAG, "run-1")                       # another step does not resume it
    aside.rename(sample_file)
    privacy_audit.validate(DEP, DAG, "run-1")                         # Airflow's retry of validate
    probe_all("run-1")
    privacy_audit.record(DEP, DAG, "run-1")
    privacy_audit.evaluate(DEP, DAG, "run-1")
    with session_scope() as session:
        run = session.get(AuditRun, ref["audit_run_id"])
        assert (run.status, run.verdict, run.error) == ("succeeded", "pass", None)


def test_an_unprotected_version_does_not_pass_on_canary_evidence_with_the_default_levels(
        ledger, production_rows, model_cache, tmp_path, monkeypatch):
    """bow_inversion sees nothing here (its gate is out of reach, as on text its attacker does not
    know), yet the canaries show that v2 has no protection: with the example configuration's levels
    for the canary metrics, v1 (noise 0.2) passes and v2 (none) does not. It used to pass."""
    production_table(ledger, production_rows)
    example = yaml.safe_load((REPO / "embwarden.yaml").read_text())["deployments"][DEP]
    canary_levels = {k: v for k, v in example["thresholds"].items()
                     if k.split(".")[0] in ("candidate_inversion", "attribute_inference")}
    assert set(canary_levels) == {"candidate_inversion.top1", "attribute_inference.advantage"}
    probes = {name: example["probes"][name] for name in ("candidate_inversion", "attribute_inference")}
    config = write_config(tmp_path / "embwarden.yaml", source_url=ledger, cache=model_cache, probes=probes,
                          canaries=200, thresholds={"bow_inversion.token_f1": {"gate": 0.99}, **canary_levels})
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(config))
    with session_scope() as session:
        sync(session, load_config())
    audit("run-1")
    with session_scope() as session:
        activate(session, DEP, "v2", actor="test", reason="deploy v2, unprotected")
    audit("run-2")
    with session_scope() as session:
        v1, v2 = session.scalars(sa.select(AuditRun).order_by(AuditRun.id)).all()
        scores = {s.key: s.value for s in v2.scores}
        assert v1.verdict == "pass", {s.key: s.value for s in v1.scores}
        assert v2.verdict == "gate" and scores["candidate_inversion.top1"] >= 0.5, scores
        assert scores["bow_inversion.token_f1"] < 0.99
