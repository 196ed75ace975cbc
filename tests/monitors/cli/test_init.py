"""`embwarden init` against a real PostgreSQL production table and the bundled encoder: the file it
writes loads and explains itself, the checks pass, and every way the source can be wrong is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from monitors.cli.main import main as cli
from monitors.config import load_config
from tests.helpers import messages, production_table, rows_for

DEP = "support-search"


@pytest.fixture(scope="module")
def vectors(encoder):
    texts = messages(40, seed=3)
    return texts, encoder.encode(texts)


@pytest.fixture
def table(pg_url, vectors):
    """prod_vectors with versions v1 (older) and v2 (newer), 20 rows each, made by the bundled MiniLM."""
    texts, vecs = vectors
    rows = rows_for("v1", texts[:20], vecs[:20], 1, as_bytes=False) + rows_for("v2", texts[20:], vecs[20:], 101,
                                                                               as_bytes=False)
    for row in rows[:20]:
        row["created_at"] = row["created_at"].replace(year=row["created_at"].year - 1)
    production_table(pg_url, rows)
    return pg_url


def init(tmp_path, *args: str) -> int:
    return cli(["init", *args, "--config", str(tmp_path / "embwarden.yaml")])


def test_init_writes_a_commented_file_that_loads_and_checks_that_source_and_encoder_answer(table, tmp_path, capsys):
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--url", table) == 0
    out = capsys.readouterr().out
    assert "ok   source: table 'prod_vectors'" in out and "v1 (20 rows), v2 (20 rows)" in out
    assert "ok   columns: id=id vector=embedding version=version text=body created_at=created_at" in out
    assert "ok   vector: row id=" in out and "of version v2 has 384 dimensions" in out
    assert "ok   encoder: bundled:all-MiniLM-L6-v2 embedded a sentence into 384 dimensions" in out
    assert "ok   dimensions: both 384" in out
    assert "with its stored vector" in out and "cosine 1.000" in out   # the same pipeline made the table
    assert "FAIL" not in out

    path = tmp_path / "embwarden.yaml"
    config = load_config(path)                       # what the DAGs will load
    dep = config.deployment(DEP)
    assert dep.active_version == "v2"                # the newest rows' version
    assert dep.source.url == table and dep.source.table == "prod_vectors"
    assert (dep.source.columns.text, dep.source.columns.created_at) == ("body", "created_at")
    assert set(dep.probes) == {"bow_inversion", "candidate_inversion", "attribute_inference"}
    assert dep.thresholds["bow_inversion.token_f1"].gate == 0.5
    assert dep.drift is not None and "drift.model_auc" in dep.thresholds
    text = path.read_text()
    for comment in ("# Where the production vectors are read from", "# unique row id", "transform: {kind: none}",
                    "# The table also holds versions v1", "# alerts:", "# What the pipeline does to each vector"):
        assert comment in text


def test_init_adds_to_an_existing_file_keeping_its_comments_and_refuses_to_replace_without_force(
        table, tmp_path, capsys):
    path = tmp_path / "embwarden.yaml"
    path.write_text("# our own notes on the audits\nalerts:\n  - {kind: email, to: [sec@example.com]}  # the team\n")
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--url", table, "--skip-checks") == 0
    assert init(tmp_path, "billing", "--table", "prod_vectors", "--url", table, "--skip-checks", "--version",
                "v2") == 0
    text = path.read_text()
    assert "# our own notes on the audits" in text and "# the team" in text
    assert "# Where the production vectors are read from" in text.split("billing:")[1]
    config = load_config(path)
    assert sorted(config.deployments) == ["billing", DEP] and config.alerts[0].to == ["sec@example.com"]
    capsys.readouterr()

    assert init(tmp_path, "billing", "--table", "prod_vectors", "--url", table, "--version", "v1") == 2
    err = capsys.readouterr().err
    assert f"{path} already has a deployment 'billing'; --force replaces it" in err
    assert load_config(path).deployment("billing").active_version == "v2"   # untouched

    assert init(tmp_path, "billing", "--table", "prod_vectors", "--url", table, "--version", "v1", "--force") == 0
    assert "replaced deployment billing (active version v1)" in capsys.readouterr().out
    config = load_config(path)
    assert config.deployment("billing").active_version == "v1" and config.deployment(DEP).active_version == "v1"
    assert "# our own notes on the audits" in path.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--table", "nope"], "FAIL source: table 'nope' not found in postgresql+psycopg2://postgres@127.0.0.1:5432/"
                          "{db}; it has ['prod_vectors']"),
    (["--table", "prod_vectors", "--vector-column", "vec"],
     "FAIL source: column 'vec' (--vector-column) not found in table 'prod_vectors' in "
     "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}; it has ['id', 'embedding', 'body', 'version', 'created_at']"),
    (["--table", "prod_vectors", "--version", "v9"],
     "FAIL version: no rows with version = 'v9' in table 'prod_vectors'; it has ['v1', 'v2']"),
])
def test_init_names_what_is_wrong_with_the_source_and_writes_nothing(table, tmp_path, capsys, args, message):
    assert init(tmp_path, DEP, "--url", table, *args) == 1
    captured = capsys.readouterr()
    assert message.format(db=table.rsplit("/", 1)[1]) in captured.out
    assert f"{tmp_path / 'embwarden.yaml'} was not written" in captured.err
    assert not (tmp_path / "embwarden.yaml").exists()


def test_init_names_an_unreachable_database_and_an_undefined_connection(tmp_path, capsys, monkeypatch):
    url = "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--url", url) == 1
    out = capsys.readouterr().out
    assert f"FAIL source: cannot reach {url}: " in out and "Connection refused" in out
    assert "ok   encoder:" in out          # the encoder is still checked

    monkeypatch.delenv("AIRFLOW_CONN_PROD_DB", raising=False)
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--connection", "prod_db", "--skip-checks") == 0
    assert init(tmp_path, "other", "--table", "prod_vectors", "--connection", "prod_db") == 1
    out = capsys.readouterr().out
    assert ("FAIL source: Airflow connection 'prod_db' is not defined (outside Airflow, set AIRFLOW_CONN_PROD_DB)"
            in out)


def test_init_through_an_airflow_connection(table, tmp_path, capsys, monkeypatch):
    url = sa.engine.make_url(table)
    monkeypatch.setenv("AIRFLOW_CONN_PROD_DB", json.dumps({"conn_type": "postgres", "host": url.host, "port": url.port,
                                                           "login": url.username, "schema": url.database}))
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--connection", "prod_db", "--version", "v1") == 0
    out = capsys.readouterr().out
    assert "ok   source: table 'prod_vectors' in connection prod_db postgresql" in out
    source = yaml.safe_load((tmp_path / "embwarden.yaml").read_text())["deployments"][DEP]["source"]
    assert source["connection"] == "prod_db" and "url" not in source


def test_init_fails_when_the_encoder_does_not_make_vectors_of_the_table_s_dimension(pg_url, tmp_path, capsys):
    rng = np.random.default_rng(0)
    production_table(pg_url, rows_for("v1", messages(5, seed=1), rng.normal(size=(5, 8)), 1, as_bytes=False))
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--url", pg_url) == 1
    out = capsys.readouterr().out
    assert "ok   vector: row id=" in out and "has 8 dimensions" in out
    assert ("FAIL dimensions: the table's vectors have 8 dimensions but version v1's pipeline "
            "(bundled:all-MiniLM-L6-v2) makes 384") in out


def test_init_refuses_a_bad_name_and_a_missing_model(table, tmp_path, capsys):
    assert init(tmp_path, "Support Search", "--table", "prod_vectors", "--url", table) == 2
    assert "deployment name 'Support Search'" in capsys.readouterr().err
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--url", table, "--model", str(tmp_path / "nomodel")) == 1
    out = capsys.readouterr().out
    assert f"FAIL encoder: encoder.model: {tmp_path / 'nomodel'} is not a Hugging Face model directory" in out


def test_init_reads_a_relative_sqlite_file_from_where_it_is_run(tmp_path, capsys, monkeypatch, vectors):
    texts, vecs = vectors
    monkeypatch.chdir(tmp_path)
    production_table("sqlite:///prod.db", rows_for("v1", texts[:10], vecs[:10], 1, as_bytes=True))
    config = tmp_path / "conf" / "embwarden.yaml"
    assert cli(["init", DEP, "--table", "prod_vectors", "--url", "sqlite:///prod.db", "--config", str(config)]) == 0
    assert "ok   dimensions: both 384" in capsys.readouterr().out
    assert load_config(config).deployment(DEP).source.url == f"sqlite:///{tmp_path / 'prod.db'}"


def test_a_version_name_the_file_cannot_hold_is_refused_naming_the_file(pg_url, tmp_path, capsys, vectors):
    texts, vecs = vectors
    production_table(pg_url, rows_for("Release 1", texts[:5], vecs[:5], 1, as_bytes=False))
    assert init(tmp_path, DEP, "--table", "prod_vectors", "--url", pg_url) == 2
    err = capsys.readouterr().err
    assert f"embwarden init: {tmp_path / 'embwarden.yaml'}: deployments.{DEP}.versions.Release 1" in err
    assert list(tmp_path.iterdir()) == []      # neither the file nor a temporary one is left
