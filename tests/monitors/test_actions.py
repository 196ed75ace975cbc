"""Verdicts acting on real systems: PostgreSQL ledger, a real SMTP server and a real webhook
receiver on loopback. The privacy_audit task bodies are called in order, as Airflow runs them."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from airflow.sdk.exceptions import AirflowFailException

from audits.pipeline import EmbeddingCache
from audits.transforms import GaussianNoise
from monitors.alerts import AlertsUndelivered
from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.gates import status
from monitors.ledger.database import session_scope
from monitors.ledger.models import Action, AlertRecord, AuditRun, GateEvent, Incident
from monitors.ledger.registry import sync
from monitors.service.app import create_app
from monitors.tasks import privacy_audit
from monitors.versions import activate
from tests.helpers import messages, production_table, rows_for, running, write_config
from tests.receivers import free_port, smtp_connection

DAG, DEP = "privacy_audit", "support-search"


@pytest.fixture(scope="module")
def production_rows(encoder, tmp_path_factory):
    cache = EmbeddingCache(tmp_path_factory.mktemp("prod-cache"))
    texts_v1, texts_v2 = messages(150, seed=11), messages(150, seed=12)
    v1 = GaussianNoise(0.2).apply(cache.encode(encoder, texts_v1), np.random.default_rng(0))
    return (rows_for("v1", texts_v1, v1, 1, as_bytes=False)
            + rows_for("v2", texts_v2, cache.encode(encoder, texts_v2), 1001, as_bytes=False))


@pytest.fixture
def setup(ledger, production_rows, model_cache, tmp_path, monkeypatch, mail_catcher, webhook_receiver):
    """A deployment whose alerts go by mail and by Slack-compatible webhook to loopback receivers."""
    production_table(ledger, production_rows)
    path = write_config(tmp_path / "embwarden.yaml", source_url=ledger, cache=model_cache)
    config = yaml.safe_load(path.read_text())
    config["alerts"] = [{"kind": "email", "to": ["privacy@example.com"], "from_email": "embwarden@example.com"},
                        {"kind": "webhook", "format": "slack"}]
    config["artifacts"]["base_url"] = "https://reports.example.com/embwarden"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(path))
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", mail_catcher.connection())
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_WEBHOOK", webhook_receiver.connection())
    with session_scope() as session:
        sync(session, load_config())
    return path


def until_act(run_id: str) -> dict:
    """The steps of a run before `act`, as Airflow runs them."""
    ref = privacy_audit.sample(DEP, DAG, run_id)
    privacy_audit.validate(DEP, DAG, run_id)
    for job in privacy_audit.probe_jobs([DEP], DAG, run_id):
        privacy_audit.probe(job["ref"], job["probe"])
    privacy_audit.record(DEP, DAG, run_id)
    privacy_audit.evaluate(DEP, DAG, run_id)
    return ref


def audit(run_id: str) -> dict:
    ref = until_act(run_id)
    for step in (privacy_audit.act, privacy_audit.write_report, privacy_audit.cleanup):
        step(DEP, DAG, run_id)
    return ref


def html_of(mail) -> str:
    return "".join(p.get_payload(decode=True).decode() for p in mail.walk() if p.get_content_type() == "text/html")


def kinds_of(session, audit_run_id: int) -> list[tuple[str, str]]:
    rows = session.scalars(sa.select(Action).where(Action.audit_run_id == audit_run_id).order_by(Action.id))
    return [(a.kind, a.status) for a in rows]


def embed_with(url: str) -> httpx.Response:
    """What a client of the reference service gets, once the service has reread the ledger."""
    time.sleep(0.3)   # the service rereads the gate every 0.1 s
    return httpx.post(f"{url}/v1/embeddings", json={"input": ["where is my parcel?"]}, timeout=60)


def test_rollback_story_mail_webhook_service_reaudit_and_reopen(setup, mail_catcher, webhook_receiver,
                                                                 production_rows):
    with running(create_app(DEP, cache_seconds=0.1)) as service:
        audit("run-1")                                              # v1 passes: nothing to say
        assert mail_catcher.messages == [] and webhook_receiver.requests == []
        assert cli(["activate", DEP, "v2", "--reason", "deploy v2"]) == 0
        assert embed_with(service).headers["X-Embwarden-Version"] == "v2"
        second = audit("run-2")
        refused = embed_with(service)                               # the gate is closed: the service refuses
        assert refused.status_code == 503 and "crossed rollback threshold 0.55" in refused.json()["detail"]["reason"]
        [request] = privacy_audit.reaudit_requests([DEP], DAG, "run-2")
        privacy_audit.reaudit_requested(request)                             # the DAG emits the Asset event ...
        third = audit("reaudit-1")                                  # ... and the scheduler starts this run
        served = embed_with(service)
        assert served.status_code == 200 and served.headers["X-Embwarden-Version"] == "v1"

    with session_scope() as session:
        assert kinds_of(session, second["audit_run_id"]) == [
            ("close_gate", "done"), ("rollback", "done"), ("reaudit", "done"), ("alert", "done")]
    mail = mail_catcher.messages[0]
    assert mail["To"] == "privacy@example.com" and mail["Subject"] == "[embwarden] support-search v2: rollback"
    body = html_of(mail)
    for expected in ("support-search", "v2", "bow_inversion.token_f1", "0.55", "close_gate", "rollback",
                     "rolled back to v1", "https://reports.example.com/embwarden/",
                     # in plain words first: what leaks, with the numbers; no protection; what to do next
                     "An attacker who holds these vectors names", "This version adds no protection",
                     "embwarden frontier support-search"):
        assert expected in body
    slack = webhook_receiver.requests[0][2]
    assert len(mail_catcher.messages) == len(webhook_receiver.requests) == 2   # the rollback, the resolution
    assert "crossed rollback threshold 0.55" in slack["text"] and slack["blocks"]
    for row in production_rows:                                     # alerts carry names and numbers only
        assert row["body"] not in body and row["body"] not in slack["text"]

    # The re-audit was asked for once; the run it started audited v1, which passed: the gate
    # reopened and the incident ended.
    assert (request["deployment"], request["version"]) == (DEP, "v1")
    assert privacy_audit.reaudit_requests([DEP], DAG, "run-2") == []
    with session_scope() as session:
        run = session.get(AuditRun, third["audit_run_id"])
        assert (run.version.name, run.verdict) == ("v1", "pass")
        assert kinds_of(session, run.id) == [("reopen_gate", "done"), ("alert", "done")]
        gate = status(session, DEP)
        assert (gate.state, gate.active_version) == ("open", "v1") and "passed" in gate.reason
        incident = session.scalar(sa.select(Incident))
        assert (incident.status, incident.level, incident.resolved_run_id) == ("resolved", "rollback", run.id)
        states = session.scalars(sa.select(GateEvent.state).order_by(GateEvent.id)).all()
        assert states == ["open", "closed", "open"]
    assert [m["Subject"] for m in mail_catcher.messages][1] == "[embwarden] resolved: support-search v1: pass"
    assert "gate reopened" in webhook_receiver.requests[1][2]["text"]


def test_retries_repeat_no_action_and_no_alert(setup, mail_catcher, webhook_receiver):
    audit("run-1")
    with session_scope() as session:
        activate(session, DEP, "v2", actor="test", reason="deploy v2")
    ref = audit("run-2")
    for step in (privacy_audit.evaluate, privacy_audit.act, privacy_audit.act):                # Airflow retries these
        step(DEP, DAG, "run-2")
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(GateEvent)
                              .where(GateEvent.audit_run_id == ref["audit_run_id"])) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(AlertRecord)) == 2   # mail + webhook
        assert len(kinds_of(session, ref["audit_run_id"])) == 4
    assert len(mail_catcher.messages) == 1 and len(webhook_receiver.requests) == 1


def test_smtp_down_the_gate_still_closes_and_the_alert_is_retried(setup, monkeypatch, mail_catcher,
                                                                     webhook_receiver):
    audit("run-1")
    with session_scope() as session:
        activate(session, DEP, "v2", actor="test", reason="deploy v2")
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", smtp_connection(free_port()))   # nothing listens
    ref = until_act("run-2")
    with pytest.raises(AlertsUndelivered, match="email:embwarden_smtp: email via connection embwarden_smtp"):
        privacy_audit.act(DEP, DAG, "run-2")                                 # retryable: not AirflowFailException
    with session_scope() as session:
        assert status(session, DEP).state == "closed" and status(session, DEP).active_version == "v1"
        assert dict(kinds_of(session, ref["audit_run_id"]))["alert"] == "failed"
        mail = session.scalar(sa.select(AlertRecord).where(AlertRecord.channel == "email:embwarden_smtp"))
        assert (mail.status, mail.attempts) == ("failed", 1) and "refused" in mail.error.lower()
    assert len(webhook_receiver.requests) == 1                       # the other channel got through

    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", mail_catcher.connection())    # the server is back
    privacy_audit.act(DEP, DAG, "run-2")                                     # Airflow's retry
    with session_scope() as session:
        mail = session.scalar(sa.select(AlertRecord).where(AlertRecord.channel == "email:embwarden_smtp"))
        assert (mail.status, mail.attempts) == ("sent", 2)
        assert dict(kinds_of(session, ref["audit_run_id"]))["alert"] == "done"
        assert session.scalar(sa.select(sa.func.count()).select_from(GateEvent)
                              .where(GateEvent.audit_run_id == ref["audit_run_id"])) == 1
    assert len(mail_catcher.messages) == 1 and len(webhook_receiver.requests) == 1


def test_one_incident_one_alert_escalation_and_resolution(setup, mail_catcher):
    """Thresholds set by hand move the verdict on unchanged data: warn, warn, gate, pass."""
    def set_levels(**levels):       # as a user does, from the CLI
        flags = [arg for level, value in levels.items() for arg in (f"--{level}", str(value))]
        assert cli(["thresholds", "set", DEP, "bow_inversion.token_f1", *flags, "--reason", "tighten"]) == 0

    set_levels(warn=0.05, gate=0.9, rollback="none")
    audit("run-1")
    audit("run-2")
    assert [m["Subject"] for m in mail_catcher.messages] == ["[embwarden] support-search v1: warn"]
    set_levels(warn=0.05, gate=0.1)
    audit("run-3")
    assert mail_catcher.messages[-1]["Subject"] == "[embwarden] escalated: support-search v1: gate"
    set_levels(warn=0.8, gate=0.9)
    audit("run-4")
    assert mail_catcher.messages[-1]["Subject"] == "[embwarden] resolved: support-search v1: pass"
    assert len(mail_catcher.messages) == 3
    with session_scope() as session:
        verdicts = session.scalars(sa.select(AuditRun.verdict).order_by(AuditRun.id)).all()
        assert verdicts == ["warn", "warn", "gate", "pass"]
        assert status(session, DEP).state == "open"                 # reopened by the passing audit
        run2 = session.scalar(sa.select(AuditRun).where(AuditRun.run_id == "run-2"))
        alert = session.scalar(sa.select(Action).where(Action.audit_run_id == run2.id, Action.kind == "alert"))
        assert "already alerted at level warn" in alert.detail["suppressed"]
        # Each run keeps the thresholds it was judged with.
        assert run2.thresholds["bow_inversion.token_f1"]["gate"] == 0.9


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_an_audit_that_cannot_run_alerts_and_the_policy_decides_the_gate(setup, ledger, mail_catcher, policy):
    config = yaml.safe_load(setup.read_text())
    config["deployments"][DEP]["on_audit_error"] = policy
    setup.write_text(yaml.safe_dump(config))
    engine = sa.create_engine(ledger)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE prod_vectors RENAME TO prod_vectors_moved"))   # the source is gone
    engine.dispose()
    with pytest.raises(Exception, match="does not exist"):
        privacy_audit.sample(DEP, DAG, "run-1")                              # after Airflow's retries ...
    privacy_audit.act(DEP, DAG, "run-1")                                     # ... act still runs (all_done)
    [mail] = mail_catcher.messages
    assert mail["Subject"] == "[embwarden] support-search v1: error"
    with session_scope() as session:
        gate = status(session, DEP)
        assert gate.state == ("closed" if policy == "fail_closed" else "open")
        if policy == "fail_closed":
            assert "audit could not run" in gate.reason


def test_rollback_without_a_passing_version_still_alerts_and_fails_once(setup, mail_catcher):
    with session_scope() as session:
        activate(session, DEP, "v2", actor="test", reason="deploy v2 unaudited")
    with pytest.raises(AirflowFailException, match="no other version has passed an audit"):
        audit("run-1")
    [mail] = mail_catcher.messages
    assert "ROLLBACK FAILED: rollback of support-search: no other version has passed an audit" in html_of(mail)
    with session_scope() as session:
        assert status(session, DEP).state == "closed"


def test_the_ledger_vanishing_mid_alert_sends_no_second_mail(setup, ledger, pg_admin_url, monkeypatch, mail_catcher,
                                                              webhook_receiver, capsys):
    """The mail leaves, then the ledger's database stops taking connections before `sent` is written.
    Airflow's retry of `act` used to send the mail again; the attempt is now recorded first, so the
    retry leaves it alone, and a resend by hand carries the same Message-ID for receivers to drop."""
    from monitors import notifiers

    audit("run-1")
    with session_scope() as session:
        activate(session, DEP, "v2", actor="test", reason="deploy v2")
    ref = until_act("run-2")
    name = sa.engine.make_url(ledger).database
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")

    def set_connections(allowed: bool) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})

    real_deliver = notifiers.deliver

    def deliver_then_lose_the_ledger(alert, channel, delivery_id=None):
        real_deliver(alert, channel, delivery_id)
        if channel.kind == "email":
            set_connections(False)

    monkeypatch.setattr(notifiers, "deliver", deliver_then_lose_the_ledger)
    try:
        with pytest.raises(Exception, match="unreachable"):
            privacy_audit.act(DEP, DAG, "run-2")
    finally:
        set_connections(True)
    assert len(mail_catcher.messages) == 1
    privacy_audit.act(DEP, DAG, "run-2")                                      # Airflow's retry
    assert len(mail_catcher.messages) == 1 and len(webhook_receiver.requests) == 1
    with session_scope() as session:
        mail = session.scalar(sa.select(AlertRecord).where(AlertRecord.audit_run_id == ref["audit_run_id"],
                                                           AlertRecord.channel == "email:embwarden_smtp"))
        assert (mail.status, mail.attempts) == ("sending", 1)
    assert cli(["alerts", "list"]) == 0
    assert "email:embwarden_smtp outcome unknown" in capsys.readouterr().out
    monkeypatch.setattr(notifiers, "deliver", real_deliver)
    assert cli(["alerts", "retry"]) == 0                             # a person decides to send it again
    first, second = mail_catcher.messages
    assert first["Message-ID"] == second["Message-ID"] and first["Message-ID"].startswith("<embwarden-alert-")
    admin.dispose()


def test_an_old_undelivered_alert_is_superseded_by_a_newer_one_not_sent_after_it(setup, ledger, monkeypatch,
                                                                                  mail_catcher):
    """run-1 cannot read its source and its `error` mail fails; run-2 passes and mails `resolved`. The
    old `error` used to be retried after it and arrive last, saying the opposite of the truth."""
    engine = sa.create_engine(ledger)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE prod_vectors RENAME TO prod_vectors_moved"))
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", smtp_connection(free_port()))   # nothing listens
    with pytest.raises(Exception, match="does not exist"):
        privacy_audit.sample(DEP, DAG, "run-1")
    with pytest.raises(AlertsUndelivered):
        privacy_audit.act(DEP, DAG, "run-1")
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE prod_vectors_moved RENAME TO prod_vectors"))
    engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_SMTP", mail_catcher.connection())
    audit("run-2")
    assert [m["Subject"] for m in mail_catcher.messages] == ["[embwarden] resolved: support-search v1: pass"]
    with session_scope() as session:
        old = session.scalar(sa.select(AlertRecord).where(AlertRecord.channel == "email:embwarden_smtp")
                             .order_by(AlertRecord.id).limit(1))
        assert old.kind == "opened" and old.status == "superseded" and old.payload["verdict"] == "error"
