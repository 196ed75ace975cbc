"""Targets end to end: the privacy_audit task bodies and the CLI against PostgreSQL, a real MLflow
server (tests/mlflow_server.py) and a signed-webhook receiver that checks signatures on its own.

The story: v1 passes; v2 is activated by hand (the alias follows, the CD system hears of it); v2's
audit rolls back while the CD system is down: the ledger acts, MLflow's alias moves back and v2 is
tagged gate=closed, the act step fails *retryably* and the deployment shows "target out of sync";
Airflow's retry of the step delivers the same event. A reopen by hand with the CD system down
exits 1 and stays out of sync until `embwarden targets sync`. Replayed and tampered events are
refused by the receiver.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.ledger.database import session_scope
from monitors.ledger.registry import get_deployment
from monitors.targets import TargetUnavailable, out_of_sync
from monitors.targets.mlflow_registry import MlflowRegistry
from monitors.targets.webhook import SignatureError, sign, verify
from monitors.tasks import privacy_audit
from tests.helpers import production_table, write_config
from tests.mlflow_server import mlflow_server, register_model  # noqa: F401  (a real MLflow server)
from tests.monitors.tasks.test_privacy_audit import DAG, DEP, probe_all, production_rows  # noqa: F401
from tests.receivers import SignedWebhookReceiver, free_port

SECRET = "s3cret-shared-with-the-cd-system"


@pytest.fixture
def deployment(ledger, production_rows, model_cache, mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    """support-search with an MLflow target (v1 -> model version 1, v2 -> 2) and a CD webhook."""
    production_table(ledger, production_rows)
    model = f"support-search-{uuid.uuid4().hex[:8]}"
    assert register_model(mlflow_server.url, model, 2) == ["1", "2"]
    path = write_config(tmp_path / "embwarden.yaml", source_url=ledger, cache=model_cache)
    config = yaml.safe_load(path.read_text())
    config["deployments"][DEP]["targets"] = [
        {"kind": "mlflow", "model": model, "alias": "champion", "versions": {"v1": 1, "v2": 2}},
        {"kind": "webhook", "connection": "embwarden_deploy_hook", "endpoint": "/deploy-events"},
    ]
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(path))
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_MLFLOW", mlflow_server.connection())
    receiver = SignedWebhookReceiver(SECRET)
    yield model, receiver
    receiver.stop()


def cd_system(monkeypatch, receiver: SignedWebhookReceiver | None) -> None:
    """Point the webhook's connection at the receiver, or at a port where nothing listens (down)."""
    conn = receiver.connection() if receiver else json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": free_port(), "password": SECRET})
    monkeypatch.setenv("AIRFLOW_CONN_EMBWARDEN_DEPLOY_HOOK", conn)


def audit_until_act(run_id: str) -> None:
    privacy_audit.sample(DEP, DAG, run_id)
    privacy_audit.validate(DEP, DAG, run_id)
    probe_all(run_id)
    privacy_audit.record(DEP, DAG, run_id)
    privacy_audit.evaluate(DEP, DAG, run_id)


def sync_status():
    with session_scope() as session:
        return out_of_sync(session, get_deployment(session, DEP))


def test_rollback_moves_the_alias_tags_the_version_and_signs_each_event(deployment, mlflow_server,  # noqa: F811
                                                                        monkeypatch, capsys):
    model, receiver = deployment
    registry = MlflowRegistry(mlflow_server.url)
    cd_system(monkeypatch, receiver)

    audit_until_act("run-1")
    privacy_audit.act(DEP, DAG, "run-1")                 # v1 passes: nothing changed, nothing pushed
    assert receiver.events == [] and sync_status() is None

    assert cli(["activate", DEP, "v2", "--reason", "deploy v2"]) == 0
    assert registry.alias_version(model, "champion") == "2"
    [activated] = receiver.events
    assert (activated["event"], activated["active_version"], activated["previous_version"]) == ("activate", "v2", "v1")
    assert sync_status().in_sync

    # v2 leaks: the audit rolls back while the CD system is down.
    cd_system(monkeypatch, None)
    audit_until_act("run-2")
    with pytest.raises(TargetUnavailable, match="target out of sync") as raised:
        privacy_audit.act(DEP, DAG, "run-2")
    assert "AirflowFailException" not in type(raised.value).__name__    # Airflow retries the step
    assert registry.alias_version(model, "champion") == "1"             # MLflow took it
    tags = registry.version_tags(model, "2")
    assert tags["embwarden.gate"] == "closed" and tags["embwarden.event"] == "rollback"
    assert "crossed rollback threshold 0.55 (version v2" in tags["embwarden.gate_reason"]
    status = sync_status()
    assert not status.in_sync and list(status.failed) == ["webhook:embwarden_deploy_hook"]
    assert "ConnectError" in status.summary()
    assert cli(["status"]) == 0 and "target out of sync" in capsys.readouterr().out
    report = Path(privacy_audit.write_report(DEP, DAG, "run-2")).read_text()   # written after act, it says so
    assert "target out of sync" in report and "webhook:embwarden_deploy_hook" in report

    # Airflow's retry of the act step, the CD system back: the same event, delivered once.
    cd_system(monkeypatch, receiver)
    privacy_audit.act(DEP, DAG, "run-2")
    rollback = receiver.events[-1]
    assert (rollback["event"], rollback["active_version"], rollback["version"], rollback["gate"]) == (
        "rollback", "v1", "v2", "closed")
    assert rollback["event_id"] == f"{DEP}-{status.action_id}" and sync_status().in_sync
    privacy_audit.act(DEP, DAG, "run-2")                                # a third try sends nothing more
    assert len(receiver.events) == 2

    # A replayed or tampered event is refused by the receiver.
    headers, body = receiver.raw[-1]
    keep = {k: v for k, v in headers.items() if k.lower().startswith(("embwarden", "content-type"))}
    assert httpx.post(receiver.url, content=body, headers=keep).status_code == 409            # replayed
    tampered = body.replace(b'"active_version": "v1"', b'"active_version": "v2"')
    assert tampered != body and httpx.post(receiver.url, content=tampered, headers=keep).status_code == 401
    old = int(time.time()) - 3600                                                               # re-signed, old
    stale = {**keep, "Embwarden-Signature": sign(SECRET, body, old)}
    assert httpx.post(receiver.url, content=body, headers=stale).status_code == 401
    assert [why for _, why in receiver.refused] == ["event already taken", "bad signature", "stale timestamp"]
    assert len(receiver.events) == 2

    # A change by hand while the CD system is down: the ledger changes, the command says it is out of sync.
    cd_system(monkeypatch, None)
    assert cli(["gate", "reopen", DEP, "--reason", "v1 re-audited by hand"]) == 1
    assert "out of sync" in capsys.readouterr().err
    assert registry.version_tags(model, "1")["embwarden.gate"] == "open"
    assert not sync_status().in_sync
    cd_system(monkeypatch, receiver)
    assert cli(["targets", "sync", DEP]) == 0
    assert receiver.events[-1]["event"] == "reopen_gate" and sync_status().in_sync
    assert cli(["targets", "sync", DEP]) == 0 and "nothing to push" in capsys.readouterr().out


def test_verify_refuses_a_wrong_secret_a_tampered_body_and_an_old_timestamp():
    body = json.dumps({"event_id": "support-search-7", "event": "rollback"}).encode()
    now = int(time.time())
    header = sign(SECRET, body, now)
    assert verify(SECRET, body, header)["event"] == "rollback"
    for secret, data, head, why in [
        ("another-secret", body, header, "does not match"),
        (SECRET, body + b" ", header, "does not match"),
        (SECRET, body, sign(SECRET, body, now - 301), "outside the 300 s tolerance"),
        (SECRET, body, None, "no Embwarden-Signature"),
        (SECRET, body, "v1=abc", "expected t=<unix time>"),
        (SECRET, body, "t=²,v1=abc", "expected t=<unix time>"),       # a digit to isdigit(), not to int()
        (SECRET, body, f"t={now},v1=é", "does not match"),          # not ASCII: no TypeError
    ]:
        with pytest.raises(SignatureError, match=why):
            verify(secret, data, head)


def test_a_target_must_know_every_version(tmp_path, ledger):
    from audits.errors import ConfigError

    path = write_config(tmp_path / "embwarden.yaml", source_url=ledger)
    config = yaml.safe_load(path.read_text())
    config["deployments"][DEP]["targets"] = [{"kind": "mlflow", "model": "m", "versions": {"v1": 1}}]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"targets\[0\]\.versions: expected an MLflow version number for each "
                                          r"version \['v1', 'v2'\]; missing \['v2'\]"):
        load_config(path)


def test_the_privacy_gate_dag_pushes_a_change_by_hand_and_retries_only_the_push(deployment, mlflow_server,  # noqa: F811
                                                                                monkeypatch):
    from monitors.tasks.privacy_gate import gate_change, push_targets

    model, receiver = deployment
    cd_system(monkeypatch, None)
    change = gate_change(DEP, "activate", "v2", "deploy v2 from the privacy_gate form", "privacy_gate/manual-1")
    with pytest.raises(TargetUnavailable, match="target out of sync"):
        push_targets(change)                             # Airflow retries this task, not the change
    assert MlflowRegistry(mlflow_server.url).alias_version(model, "champion") == "2"
    cd_system(monkeypatch, receiver)
    assert push_targets(change) == 2 and sync_status().in_sync
    assert push_targets(change) == 2                     # a further retry sends nothing more
    [event] = receiver.events
    assert (event["event"], event["active_version"], event["actor"]) == ("activate", "v2", "privacy_gate/manual-1")

    # A push that failed, then a newer change that went through: the old push's retry sends nothing
    # (its state is old) and the deployment stays in sync.
    cd_system(monkeypatch, None)
    old = gate_change(DEP, "close_gate", None, "closing while v2 is reviewed", "privacy_gate/manual-2")
    with pytest.raises(TargetUnavailable):
        push_targets(old)
    cd_system(monkeypatch, receiver)
    assert cli(["gate", "reopen", DEP, "--reason", "review done"]) == 0
    push_targets(old)
    assert [e["event"] for e in receiver.events] == ["activate", "reopen_gate"] and sync_status().in_sync
    tags = MlflowRegistry(mlflow_server.url).version_tags(model, "2")
    assert tags["embwarden.gate"] == "open"
