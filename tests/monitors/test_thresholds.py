"""Thresholds and gates changed from the CLI, against a PostgreSQL ledger: validated, versioned,
traceable, and readable back for any past run."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.ledger.database import session_scope
from monitors.ledger.models import Action, AuditRun, Deployment
from monitors.ledger.registry import sync
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
    assert ("version 2: warn=0.3 gate=0.4 rollback=0.55 judged on ci_low (was warn=0.45 gate=0.5 rollback=0.55) "
            "by alice") in out   # the rollback level, not named, is kept
    assert cli(["thresholds", "show", DEP]) == 0
    assert "bow_inversion.token_f1: warn=0.3 gate=0.4 rollback=0.55 judged on ci_low" in capsys.readouterr().out
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
    assert "v2 by alice: warn=0.45 gate=0.5 rollback=0.55 -> warn=0.3 gate=0.4 rollback=0.55" in \
        capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["bow_inversion.token_f1", "--warn", "0.6", "--gate", "0.5"], "levels out of order: expected warn <= gate"),
    (["bow_inversion.token_f3", "--gate", "0.5"], "bow_inversion.token_f3: unknown metric"),
    (["bow_inversion.token_f1", "--rollback", "7"], "token_f1.rollback: 7.0 is outside the metric's range [0, 1]"),
    (["bow_inversion.token_f1"], "levels: name at least one of warn, gate, rollback, higher_is_worse, basis"),
    (["bow_inversion.token_f1", "--warn", "none", "--gate", "none", "--rollback", "none"],
     "set at least one of warn, gate, rollback"),
    (["bow_inversion.token_f1", "--gate", "0.7"],
     "expected gate <= rollback, found 0.7 and 0.55 (kept as in force: warn=0.45, rollback=0.55; name a level"),
])
def test_invalid_thresholds_are_refused_naming_the_field(config, capsys, args, message):
    assert cli(["thresholds", "set", DEP, *args, "--reason", "try"]) == 2
    assert message in capsys.readouterr().err
    with session_scope() as session:
        assert len(history(session, DEP, "bow_inversion.token_f1")) == 1   # nothing stored


@pytest.mark.parametrize(("args", "message"), [
    (["--gate", "high"], "gate: expected a number, found 'high'"),
    (["--gate", "nan"], "gate: expected a finite number, found 'nan'"),
    (["--basis", "mean"], "argument --basis: invalid choice: 'mean'"),
])
def test_a_bad_value_is_refused_by_the_parser(config, capsys, args, message):
    with pytest.raises(SystemExit):
        cli(["thresholds", "set", DEP, "bow_inversion.token_f1", *args, "--reason", "try"])
    assert message in capsys.readouterr().err


def test_setting_one_level_keeps_the_others_and_none_removes_one(config, capsys):
    """`--warn 0.4` used to drop gate and rollback without a word."""
    assert cli(["thresholds", "set", DEP, "bow_inversion.token_f1", "--warn", "0.4", "--reason", "warn earlier"]) == 0
    with session_scope() as session:
        assert effective(session, DEP)["bow_inversion.token_f1"] == {
            "warn": 0.4, "gate": 0.5, "rollback": 0.55, "higher_is_worse": True, "basis": "value"}
    assert cli(["thresholds", "set", DEP, "bow_inversion.token_f1", "--rollback", "none", "--basis", "ci_low",
                "--reason", "no automatic rollback"]) == 0
    with session_scope() as session:
        assert effective(session, DEP)["bow_inversion.token_f1"] == {
            "warn": 0.4, "gate": 0.5, "rollback": None, "higher_is_worse": True, "basis": "ci_low"}
    # A coverage metric is new to the ledger's hand-made versions: lower stays worse unless said otherwise.
    assert cli(["thresholds", "set", DEP, "coverage.embedding", "--warn", "0.25", "--reason", "looser"]) == 0
    with session_scope() as session:
        assert effective(session, DEP)["coverage.embedding"]["higher_is_worse"] is False


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
    assert cli(["thresholds", "set", DEP, "bow_inversion.token_f1", "--warn", "0.1", "--gate", "0.2",
                "--reason", "tighter"]) == 0
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
