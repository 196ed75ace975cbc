"""A pgvector source on the real PostgreSQL server: exact vectors, sampling in the database (the
same for a seed, uniform, within the time window), credentials from an Airflow connection, and
errors that name the connection, the table and the column."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from scipy.stats import chisquare
from sqlalchemy.engine import make_url

from audits.errors import InvalidSample, SourceError
from audits.sources import Columns, SqlTableSource
from monitors.config import load_config
from monitors.deployments import build_source
from tests.helpers import pgvector_table, rows_for, write_config

COLUMNS = Columns(id="id", vector="embedding", version="version", text="body", created_at="created_at")
DIM = 8


def vectors(n, seed=0, dim=DIM):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def two_versions():
    return (rows_for("v1", [f"text {i}" for i in range(30)], vectors(30, 1), 1, as_bytes=False)
            + rows_for("v2", [f"other {i}" for i in range(20)], vectors(20, 2), 100, as_bytes=False))


def test_vectors_round_trip_exactly_as_float32(pg_url):
    pgvector_table(pg_url, two_versions(), DIM)
    source = SqlTableSource(pg_url, "prod_vectors", COLUMNS)
    drawn = source.draw("v2", size=10, seed=5, dimension=DIM)
    assert len(drawn) == 10 and all(100 <= int(i) < 120 for i in drawn.ids)
    assert drawn.vectors.dtype == np.float32 and drawn.dims == (DIM,) * 10
    expected = {str(100 + i): v for i, v in enumerate(vectors(20, 2))}
    for row_id, vec in zip(drawn.ids, drawn.vectors, strict=True):
        np.testing.assert_array_equal(vec, expected[row_id])
    assert all(t.startswith("other") for t in drawn.texts)
    assert all(abs(at - datetime.now(UTC).timestamp()) < 600 for at in drawn.created_at)
    assert len(source.draw("v1", size=1000, seed=0, dimension=DIM)) == 30  # fewer rows than asked: all of them


def test_nan_cannot_be_stored_and_other_dimensions_are_kept_for_validation(pg_url):
    # pgvector refuses NaN and infinity on insert, so a pgvector sample never holds them.
    bad = vectors(1, 9)[0]
    bad[3] = np.nan
    with pytest.raises(sa.exc.DataError, match="NaN not allowed in vector"):
        pgvector_table(pg_url, rows_for("v1", ["nan row"], bad[None], 1, as_bytes=False), DIM)
    # An undeclared `vector` column holds any dimension: kept, cut or zero-padded, for validation to name.
    rows = (rows_for("v1", ["ok"], vectors(1, 1), 1, False) + rows_for("v1", ["short"], vectors(1, 2, 5), 2, False)
            + rows_for("v1", ["long"], vectors(1, 3, 10), 3, False))
    pgvector_table(pg_url, rows, None, table="any_dims")
    drawn = SqlTableSource(pg_url, "any_dims", COLUMNS).draw("v1", size=3, seed=0, dimension=DIM)
    by_id = dict(zip(drawn.ids, zip(drawn.dims, drawn.vectors, strict=True), strict=True))
    assert {row_id: dim for row_id, (dim, _) in by_id.items()} == {"1": DIM, "2": 5, "3": 10}
    np.testing.assert_array_equal(by_id["2"][1][:5], vectors(1, 2, 5)[0])
    assert (by_id["2"][1][5:] == 0).all()
    np.testing.assert_array_equal(by_id["3"][1], vectors(1, 3, 10)[0][:DIM])


def test_the_same_seed_draws_the_same_sample_and_a_prefix_is_a_smaller_one(pg_url):
    pgvector_table(pg_url, two_versions(), DIM)
    source = SqlTableSource(pg_url, "prod_vectors", COLUMNS)
    a = source.draw("v1", size=10, seed=5, dimension=DIM)
    b = source.draw("v1", size=10, seed=5, dimension=DIM)
    c = source.draw("v1", size=10, seed=6, dimension=DIM)
    assert a.ids == b.ids and a.ids != c.ids and len(set(a.ids)) == 10
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert source.draw("v1", size=4, seed=5, dimension=DIM).ids == a.ids[:4]


def test_the_time_window_is_honoured(pg_url):
    now = datetime.now(UTC)
    rows = rows_for("v1", [f"t{i}" for i in range(40)], vectors(40), 1, as_bytes=False)
    for i, row in enumerate(rows):
        row["created_at"] = now - timedelta(hours=i)  # id 1 is the newest, id 40 is 39 hours old
    pgvector_table(pg_url, rows, DIM)
    source = SqlTableSource(pg_url, "prod_vectors", COLUMNS)
    since = (now - timedelta(hours=9, minutes=30)).timestamp()
    drawn = source.draw("v1", size=100, seed=1, dimension=DIM, since=since)
    assert sorted(int(i) for i in drawn.ids) == list(range(1, 11))
    assert all(at >= since for at in drawn.created_at)
    with pytest.raises(InvalidSample, match="version v1 in table 'prod_vectors'.* created at or after .* no rows"):
        source.draw("v1", size=5, seed=1, dimension=DIM, since=(now + timedelta(hours=1)).timestamp())


def test_the_sample_is_uniform_over_the_version(pg_url):
    """Draws with many seeds hit every tenth of the version's ids equally often (chi-square), and
    never a row of another version interleaved with them."""
    rows = [{"id": i, "embedding": [float(i), 0.0, 0.0, 0.0], "body": "", "created_at": None,
             "version": "v1" if i % 3 else "v2"} for i in range(1, 1501)]
    pgvector_table(pg_url, rows, 4)
    v1 = [row["id"] for row in rows if row["version"] == "v1"]
    bucket = {row_id: rank * 10 // len(v1) for rank, row_id in enumerate(v1)}
    source = SqlTableSource(pg_url, "prod_vectors", Columns())
    counts = np.zeros(10)
    for seed in range(20):
        drawn = source.draw("v1", size=300, seed=seed, dimension=4)
        assert len(drawn) == 300 and len(set(drawn.ids)) == 300
        for row_id in drawn.ids:
            counts[bucket[int(row_id)]] += 1  # a v2 id would be a KeyError
    assert chisquare(counts).pvalue > 0.001, counts


def test_credentials_come_from_an_airflow_connection(pg_url, tmp_path, monkeypatch):
    pgvector_table(pg_url, two_versions(), DIM)
    url = make_url(pg_url)
    path = write_config(tmp_path / "embwarden.yaml", pg_url)
    config = yaml.safe_load(path.read_text())
    source = config["deployments"]["support-search"]["source"]
    del source["url"]
    source["connection"] = "prod_vectors_db"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("AIRFLOW_CONN_PROD_VECTORS_DB", json.dumps(
        {"conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username,
         "schema": url.database}))
    drawn = build_source(load_config(path), "support-search").draw("v2", size=5, seed=0, dimension=DIM)
    assert len(drawn) == 5 and all(100 <= int(i) < 120 for i in drawn.ids)

    monkeypatch.setenv("AIRFLOW_CONN_PROD_VECTORS_DB", json.dumps(
        {"conn_type": "postgres", "host": url.host, "port": url.port, "login": "no_such_role",
         "password": "hunter2-secret", "schema": url.database}))
    with pytest.raises(SourceError, match="source: cannot reach table 'prod_vectors' in Airflow connection "
                                          "'prod_vectors_db'.*no_such_role") as info:
        build_source(load_config(path), "support-search").draw("v2", size=5, seed=0, dimension=DIM)
    assert "hunter2-secret" not in str(info.value)


def test_missing_table_and_columns_are_named_with_the_columns_found(pg_url):
    pgvector_table(pg_url, two_versions(), DIM)
    with pytest.raises(SourceError, match="source.table: table 'nope' in postgresql.* does not exist"):
        SqlTableSource(pg_url, "nope", COLUMNS).draw("v1", 5, 0, DIM)
    bad = Columns(id="id", vector="vec", version="version", created_at="made_at")
    with pytest.raises(SourceError, match=r"source.columns.vector: column 'vec' not found in table 'prod_vectors'.*"
                                          r"it has \['body', 'created_at', 'embedding', 'id', 'version'\]"):
        SqlTableSource(pg_url, "prod_vectors", bad).draw("v1", 5, 0, DIM)


def test_a_vector_column_of_another_dimension_is_refused_up_front(pg_url):
    pgvector_table(pg_url, two_versions(), DIM)
    with pytest.raises(SourceError, match=r"source.columns.vector: column 'embedding' of table 'prod_vectors'.* "
                                          r"is vector\(8\), expected vector\(384\).*version v1"):
        SqlTableSource(pg_url, "prod_vectors", COLUMNS).draw("v1", 5, 0, 384)


def test_halfvec_columns_are_read_through_pgvector(pg_url):
    pgvector_table(pg_url, two_versions(), DIM)
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE prod_vectors ALTER COLUMN embedding TYPE halfvec({DIM})"))
    engine.dispose()
    drawn = SqlTableSource(pg_url, "prod_vectors", COLUMNS).draw("v2", size=20, seed=0, dimension=DIM)
    expected = {str(100 + i): v for i, v in enumerate(vectors(20, 2).astype(np.float16).astype(np.float32))}
    for row_id, vec in zip(drawn.ids, drawn.vectors, strict=True):
        np.testing.assert_array_equal(vec, expected[row_id])
