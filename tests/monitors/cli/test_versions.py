"""`embwarden versions add`: a version added to the configuration file, its layout and comments kept."""

import difflib
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.ledger.database import session_scope
from tests.conftest import REPO
from tests.helpers import write_config

DEP = "support-search"


@pytest.fixture
def commented_config(tmp_path) -> Path:
    """The repository's example configuration: comments, flow mappings, an indented sequence."""
    path = tmp_path / "embwarden.yaml"
    path.write_text((REPO / "embwarden.yaml").read_text())
    return path


def changes(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("+ ")], [d[2:] for d in diff if d.startswith("- ")]


def test_versions_add_keeps_the_file_as_it_was_and_adds_the_version(commented_config, ledger, capsys):
    before = commented_config.read_text()
    spec = '{"kind": "clip_gaussian", "epsilon": 3000}'
    assert cli(["versions", "add", DEP, "clip_gaussian-eps3000", "--transform", spec,
                "--config", str(commented_config)]) == 0
    after = commented_config.read_text()
    added, removed = changes(before, after)
    assert removed == [] and len(added) == 3    # every comment and line kept
    assert added[0].startswith("      clip_gaussian-eps3000:  # added by `embwarden versions add`")
    assert added[2] == "        transform: {kind: clip_gaussian, epsilon: 3000}"
    version = load_config(commented_config).deployment(DEP).versions["clip_gaussian-eps3000"]
    assert version.transform.spec() == {"kind": "clip_gaussian", "epsilon": 3000.0, "delta": 1e-5,
                                              "clip_norm": 1.0}
    assert version.encoder.model == "bundled:all-MiniLM-L6-v2"
    out = capsys.readouterr().out
    assert "stored guarantee: (epsilon=3000, delta=1e-05)-DP per query" in out
    with session_scope() as session:
        from monitors.ledger.models import Version

        stored = session.scalar(sa.select(Version.guarantee).where(Version.name == "clip_gaussian-eps3000"))
    assert stored.startswith("(epsilon=3000, delta=1e-05)-DP")

    # A used name, or a transform the configuration refuses, leaves the file untouched.
    assert cli(["versions", "add", DEP, "clip_gaussian-eps3000", "--transform", spec,
                "--config", str(commented_config)]) == 2
    assert cli(["versions", "add", DEP, "v2", "--transform", '{"kind": "none"}',
                "--config", str(commented_config)]) == 2
    assert cli(["versions", "add", DEP, "bad", "--transform", '{"kind": "clip_gaussian", "epsilon": -1}',
                "--config", str(commented_config)]) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and "epsilon" in err and str(commented_config) in err and ".tmp" not in err
    assert commented_config.read_text() == after
    assert [p.name for p in commented_config.parent.iterdir()] == ["embwarden.yaml"]   # no temporary file left


def test_versions_add_without_a_ledger_still_writes_and_says_so(tmp_path, monkeypatch, pg_admin_url, capsys):
    missing = pg_admin_url.set(database="embwarden_no_such_db").render_as_string(hide_password=False)
    monkeypatch.setenv("EMBWARDEN_DB_URL", missing)
    monkeypatch.delenv("AIRFLOW_CONN_EMBWARDEN_DB", raising=False)
    # Written by yaml.safe_dump: another layout than the example's.
    path = write_config(tmp_path / "embwarden.yaml", source_url=f"sqlite:///{tmp_path}/unused.db",
                        cache=tmp_path / "cache", aux_size=400, epochs=10, canaries=60)
    before = path.read_text()
    assert cli(["versions", "add", DEP, "vmf-eps1000", "--transform", '{"kind": "vmf", "epsilon": 1000}',
                "--from", "v2", "--config", str(path)]) == 0
    assert "not registered in the ledger" in capsys.readouterr().out
    config = load_config(path)
    assert config.deployment(DEP).versions["vmf-eps1000"].transform.kind == "vmf"
    added, removed = changes(before, path.read_text())
    assert removed == []
    assert added == [f"      vmf-eps1000:  # added by `embwarden versions add` on {added[0].rsplit(' ', 1)[1]}",
                     "        transform: {kind: vmf, epsilon: 1000}"]
