"""Thresholds and gates changed from the CLI, against a PostgreSQL ledger: validated, versioned,
traceable, and readable back for any past run."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from monitors.cli import main as cli
from monitors.config import load_config
from monitors.database import session_scope
from monitors.ledger import Action, AuditRun, Deployment
from monitors.registry import sync
from monitors.thresholds import effective, history
from tests.helpers import write_config

DEP = "support-search"


@pytest.fixture
def config(ledger, tmp_path, monkeypatch):
    path = write_config(tmp_path / "embwarden.yaml", source_url=ledger)
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(path))
    with session_scope() as session:
        sync(session, load_config())
    return path


def test_set_show_and_trace_a_threshold(config, capsys):
    assert cli(["thresholds", "set", DEP, "bow_inversion.token_f1", "--warn", "0.3", "--gate", "0.4",
                "--basis", "ci_low", "--reason", "gate on sure leaks only", "--author", "alice"]) == 0
    out = capsys.readouterr().out
    assert "version 2: warn=0.3 gate=0.4 judged on ci_low (was warn=0.45 gate=0.5 rollback=0.55) by alice" in out
    assert cli(["thresholds", "show", DEP]) == 0
    assert "bow_inversion.token_f1: warn=0.3 gate=0.4 judged on ci_low" in capsys.readouterr().out
    with session_scope() as session:
        changes = history(session, DEP, "bow_inversion.token_f1")
        assert [(c.version, c.author) for c in changes] == [(1, "embwarden.yaml"), (2, "alice")]
        assert changes[1].old["gate"] == 0.5 and changes[1].new["gate"] == 0.4
        assert changes[1].reason == "gate on sure leaks only"
        # The file's unchanged defaults do not undo a change made by hand.
        sync(session, load_config())
    with session_scope() as session:
        assert effective(session, DEP)["bow_inversion.token_f1"]["gate"] == 0.4
    assert cli(["thresholds", "history", DEP]) == 0
    assert "v2 by alice: warn=0.45 gate=0.5 rollback=0.55 -> warn=0.3 gate=0.4" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["bow_inversion.token_f1", "--warn", "0.6", "--gate", "0.5"], "levels out of order: expected warn <= gate"),
    (["bow_inversion.token_f3", "--gate", "0.5"], "bow_inversion.token_f3: unknown metric"),
    (["bow_inversion.token_f1", "--rollback", "7"], "token_f1.rollback: 7.0 is outside the metric's range [0, 1]"),
    (["bow_inversion.token_f1", "--basis", "mean", "--gate", "0.5"], "basis: expected one of value, ci_low"),
    (["bow_inversion.token_f1"], "set at least one of warn, gate, rollback"),
])
def test_invalid_thresholds_are_refused_naming_the_field(config, capsys, args, message):
    assert cli(["thresholds", "set", DEP, *args, "--reason", "try"]) == 2
    assert message in capsys.readouterr().err
    with session_scope() as session:
        assert len(history(session, DEP, "bow_inversion.token_f1")) == 1   # nothing stored


def test_a_non_number_is_refused_by_the_parser(config, capsys):
    with pytest.raises(SystemExit):
        cli(["thresholds", "set", DEP, "bow_inversion.token_f1", "--gate", "high", "--reason", "try"])
    assert "gate: expected a number, found 'high'" in capsys.readouterr().err


def test_a_past_run_keeps_the_thresholds_it_was_judged_with(config):
    with session_scope() as session:
        dep = session.scalar(sa.select(Deployment))
        judged = AuditRun(dag_id="privacy_audit", run_id="r1", deployment_id=dep.id, version_id=dep.active_version_id,
                          status="succeeded", verdict="pass", thresholds=effective(session, DEP))
        stopped = AuditRun(dag_id="privacy_audit", run_id="r2", deployment_id=dep.id,
                           version_id=dep.active_version_id, status="failed")
        session.add_all([judged, stopped])
        session.flush()
        ids = judged.id, stopped.id
    assert cli(["thresholds", "set", DEP, "bow_inversion.token_f1", "--gate", "0.2", "--reason", "tighter"]) == 0
    with session_scope() as session:
        assert effective(session, DEP, ids[0])["bow_inversion.token_f1"]["gate"] == 0.5
        assert effective(session, DEP, ids[1])["bow_inversion.token_f1"]["gate"] == 0.5   # as when it started
        assert effective(session, DEP)["bow_inversion.token_f1"]["gate"] == 0.2


def test_gate_changes_by_hand_are_recorded_with_who_and_why(config, capsys):
    assert cli(["gate", "close", DEP, "--reason", "incident 42: investigating"]) == 0
    assert "gate=closed (incident 42: investigating)" in capsys.readouterr().out
    assert cli(["gate", "activate", DEP, "--version", "v2", "--reason", "roll forward after fix"]) == 0
    assert cli(["gate", "reopen", DEP, "--reason", "fixed"]) == 0
    assert "active=v2 gate=open (fixed)" in capsys.readouterr().out
    assert cli(["gate", "activate", DEP, "--reason", "no version given"]) == 2
    assert "version: activate needs the version" in capsys.readouterr().err
    with session_scope() as session:
        rows = session.scalars(sa.select(Action).order_by(Action.id)).all()
        assert [(a.kind, a.reason) for a in rows] == [("close_gate", "incident 42: investigating"),
                                                      ("activate", "roll forward after fix"),
                                                      ("reopen_gate", "fixed")]
        assert rows[1].detail == {"from": "v1", "to": "v2", "reaudit": True}
