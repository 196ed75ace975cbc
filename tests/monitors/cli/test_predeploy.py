"""`embwarden audit --deployment`: the CI pre-deploy check judges a candidate with the deployment's
probes and thresholds and exits with the verdict's documented code (monitors.candidates.EXIT_CODES)."""

from __future__ import annotations

import json

import pytest
import yaml

from monitors.candidates import EXIT_CODES
from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.ledger.database import session_scope
from monitors.ledger.registry import sync
from monitors.thresholds import set_threshold
from tests.helpers import production_table, write_config
from tests.monitors.tasks.test_privacy_audit import DEP, production_rows  # noqa: F401
from tests.receivers import free_port


@pytest.fixture
def config(ledger, production_rows, model_cache, tmp_path, monkeypatch):  # noqa: F811
    production_table(ledger, production_rows)
    path = write_config(tmp_path / "embwarden.yaml", source_url=ledger, cache=model_cache)
    monkeypatch.setenv("EMBWARDEN_CONFIG", str(path))
    with session_scope() as session:   # a deployment embwarden already watches
        sync(session, load_config(path))
    return path


def check(tmp_path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "verdict.json"
    out.unlink(missing_ok=True)
    code = cli(["audit", "--deployment", DEP, *args, "--json", str(out)])
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_exit_codes_say_the_verdict(config, tmp_path, capsys):
    assert EXIT_CODES == {"pass": 0, "warn": 0, "gate": 3, "rollback": 4, "inconclusive": 5, "invalid": 6,
                          "error": 7}
    # The unprotected v2 leaks past the rollback level: CI must not deploy it.
    code, verdict = check(tmp_path, "--version", "v2")
    assert (code, verdict["verdict"], verdict["exit_code"]) == (4, "rollback", 4)
    assert verdict["reason"].startswith("bow_inversion.token_f1 = 0.") and "crossed rollback threshold 0.55" in \
        verdict["reason"]
    assert verdict["target"] == "sample" and verdict["sample_size"] == 120 and verdict["thresholds_from"] == "ledger"
    assert {s["probe"] for s in verdict["scores"]} == {"bow_inversion", "coverage"}
    assert "-> exit 4" in capsys.readouterr().out

    # A candidate from a spec file (not in embwarden.yaml), noisy like v1: it passes.
    spec = tmp_path / "candidate.yaml"
    spec.write_text(yaml.safe_dump({"transform": {"kind": "gaussian_noise", "sigma": 0.2}}))
    code, verdict = check(tmp_path, "--version-spec", str(spec))
    assert (code, verdict["version"], verdict["verdict"]) == (0, "candidate", "pass")

    # The UI's threshold changes (in the ledger) win over the file: a stricter gate level gates it.
    with session_scope() as session:
        config_now = load_config()
        set_threshold(session, config_now, DEP, "bow_inversion.token_f1", {"warn": 0.1, "gate": 0.2, "rollback": 0.9},
                      author="test", reason="stricter after a review")
    code, verdict = check(tmp_path, "--version-spec", str(spec))
    assert (code, verdict["verdict"]) == (3, "gate")

    # An attacker that does not cover the candidate's sample cannot clear it.
    with session_scope() as session:
        config_now = load_config()
        set_threshold(session, config_now, DEP, "coverage.embedding", {"warn": 0.99, "higher_is_worse": False},
                      author="test", reason="demand full coverage")
        lenient = {"warn": 0.95, "gate": None, "rollback": None}
        set_threshold(session, config_now, DEP, "bow_inversion.token_f1", lenient, author="test", reason="lenient")
    code, verdict = check(tmp_path, "--version-spec", str(spec))
    assert (code, verdict["verdict"]) == (5, "inconclusive") and "does not cover" in verdict["reason"]


def test_bad_input_exits_2_naming_the_field_and_an_unreachable_source_exits_7(config, tmp_path, capsys,
                                                                              monkeypatch):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"transform": {"kind": "gaussian_noise", "sigma": -1}}))
    assert cli(["audit", "--deployment", DEP, "--version-spec", str(spec)]) == 2
    assert "--version-spec" in (err := capsys.readouterr().err) and "sigma" in err
    spec.write_text(yaml.safe_dump({"transform": {"kind": "none"}}))
    assert cli(["audit", "--deployment", DEP, "--version-spec", str(spec), "--version", "v1"]) == 2
    assert "already has a version 'v1' that differs" in capsys.readouterr().err
    assert cli(["audit", "--deployment", DEP]) == 2
    assert "give --version NAME" in capsys.readouterr().err
    assert cli(["audit", "--deployment", DEP, "--version", "v2", "--encoder", "x"]) == 2
    assert "--encoder belong to the other form" in capsys.readouterr().err

    # A configured ledger that does not answer: no verdict (the UI may have tightened a threshold there),
    # never a fallback to the file's thresholds.
    with monkeypatch.context() as m:
        m.setenv("EMBWARDEN_DB_URL", f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/test")
        code, _ = check(tmp_path, "--version", "v1")
        assert code == 7 and "LedgerUnavailable" in capsys.readouterr().err

    data = yaml.safe_load(config.read_text())
    data["deployments"][DEP]["source"]["url"] = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/test"
    config.write_text(yaml.safe_dump(data))
    code, verdict = check(tmp_path, "--version", "v2")
    assert code == 7 and "the audit could not run" in capsys.readouterr().err


def test_without_texts_a_candidate_is_judged_on_canaries_and_never_cleared(config, tmp_path, capsys):
    """Canaries can show a leak, but whether the attacker covers production text cannot be measured
    without it: a protected candidate is inconclusive (5), never a pass; an unprotected one still leaks."""
    data = yaml.safe_load(config.read_text())
    data["deployments"][DEP]["source"]["columns"]["text"] = None
    config.write_text(yaml.safe_dump(data))
    code, verdict = check(tmp_path, "--version", "v1")
    assert (code, verdict["verdict"], verdict["target"]) == (5, "inconclusive", "canaries"), verdict
    assert "synthetic canaries only" in verdict["reason"] and "source.columns.text" in verdict["reason"]
    code, verdict = check(tmp_path, "--version", "v2")
    assert code in (3, 4) and verdict["target"] == "canaries", verdict
