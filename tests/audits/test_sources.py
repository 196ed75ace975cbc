"""Sources read real databases and files; bad rows are named, never silently dropped."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from audits.errors import InvalidSample, SourceError
from audits.sources import Columns, ParquetSource, SqlTableSource
from tests.helpers import production_table, rows_for

COLUMNS = Columns(id="id", vector="embedding", version="version", text="body", created_at="created_at")
DIM = 8


def vectors(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def two_versions(as_bytes):
    return (rows_for("v1", [f"text {i}" for i in range(30)], vectors(30, 1), 1, as_bytes)
            + rows_for("v2", [f"other {i}" for i in range(20)], vectors(20, 2), 100, as_bytes))


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'prod.db'}"


def test_sqlite_float32_bytes_sample_is_reproducible_and_version_scoped(sqlite_url):
    production_table(sqlite_url, two_versions(as_bytes=True))
    source = SqlTableSource(sqlite_url, "prod_vectors", COLUMNS)
    a = source.draw("v2", size=10, seed=5, dimension=DIM)
    b = source.draw("v2", size=10, seed=5, dimension=DIM)
    c = source.draw("v2", size=10, seed=6, dimension=DIM)
    assert a.ids == b.ids and a.ids != c.ids
    assert len(a) == 10 and all(100 <= int(i) < 120 for i in a.ids)
    expected = {str(100 + i): v for i, v in enumerate(vectors(20, 2))}
    for i, vec in zip(a.ids, a.vectors, strict=True):
        np.testing.assert_array_equal(vec, expected[i])
    assert a.texts[0].startswith("other")


def test_sample_larger_than_table_takes_every_row(sqlite_url):
    production_table(sqlite_url, two_versions(as_bytes=True))
    drawn = SqlTableSource(sqlite_url, "prod_vectors", COLUMNS).draw("v1", size=1000, seed=0, dimension=DIM)
    assert len(drawn) == 30


def test_postgres_float_arrays(pg_url):
    production_table(pg_url, two_versions(as_bytes=False))
    drawn = SqlTableSource(pg_url, "prod_vectors", COLUMNS).draw("v1", size=12, seed=1, dimension=DIM)
    assert drawn.vectors.shape == (12, DIM) and drawn.vectors.dtype == np.float32


@pytest.mark.parametrize("as_bytes", [False, True], ids=["real[]", "float32 bytes"])
def test_postgres_samples_in_the_database_reproducibly_and_exactly(pg_url, as_bytes):
    production_table(pg_url, two_versions(as_bytes), vector_type=sa.LargeBinary if as_bytes else None)
    source = SqlTableSource(pg_url, "prod_vectors", COLUMNS)
    a = source.draw("v1", size=12, seed=1, dimension=DIM)
    assert a.ids == source.draw("v1", size=12, seed=1, dimension=DIM).ids
    assert a.ids != source.draw("v1", size=12, seed=2, dimension=DIM).ids and len(set(a.ids)) == 12
    expected = {str(1 + i): v for i, v in enumerate(vectors(30, 1))}
    for row_id, vec in zip(a.ids, a.vectors, strict=True):
        np.testing.assert_array_equal(vec, expected[row_id])


def test_json_text_vectors(sqlite_url):
    rows = [{"id": i, "embedding": json.dumps([float(x) for x in v]), "body": "t", "version": "v1",
             "created_at": None} for i, v in enumerate(vectors(5))]
    production_table(sqlite_url, rows, vector_type=sa.Text)
    drawn = SqlTableSource(sqlite_url, "prod_vectors", COLUMNS).draw("v1", size=5, seed=0, dimension=DIM)
    np.testing.assert_allclose(drawn.vectors, vectors(5), rtol=1e-6)


def test_missing_table_and_column_are_named(sqlite_url):
    production_table(sqlite_url, two_versions(as_bytes=True))
    with pytest.raises(SourceError, match="source.table: table 'nope'.* does not exist"):
        SqlTableSource(sqlite_url, "nope", COLUMNS).draw("v1", 5, 0, DIM)
    bad = Columns(id="id", vector="vec", version="version")
    with pytest.raises(SourceError, match="source.columns.vector: column 'vec' not found"):
        SqlTableSource(sqlite_url, "prod_vectors", bad).draw("v1", 5, 0, DIM)


def test_unreachable_database_is_a_source_error():
    url = "postgresql+psycopg2://postgres:secret@127.0.0.1:1/none"
    with pytest.raises(SourceError, match="cannot reach") as info:
        SqlTableSource(url, "t", COLUMNS).draw("v1", 5, 0, DIM)
    assert "secret" not in str(info.value)


def test_an_empty_version_is_invalid_and_bad_vectors_are_kept_for_validation(sqlite_url):
    rows = two_versions(as_bytes=True)
    bad_nan = vectors(1, 9)[0]
    bad_nan[3] = np.nan
    rows.append(rows_for("v3", ["nan row"], bad_nan[None], 500, True)[0])
    rows.append(rows_for("v4", ["short row"], vectors(1)[:, :5], 600, True)[0])
    production_table(sqlite_url, rows)
    source = SqlTableSource(sqlite_url, "prod_vectors", COLUMNS)
    with pytest.raises(InvalidSample, match="version v9 .* has no rows"):
        source.draw("v9", 5, 0, DIM)
    nan = source.draw("v3", 5, 0, DIM)            # judged by monitors.validation, which names the rows
    assert nan.ids == ("500",) and np.isnan(nan.vectors).sum() == 1 and nan.dims == (DIM,)
    short = source.draw("v4", 5, 0, DIM)
    assert short.dims == (5,) and short.vectors.shape == (1, DIM) and (short.vectors[0, 5:] == 0).all()
    assert short.created_at[0] is not None


def test_parquet_source(tmp_path):
    vecs = vectors(40, 3)
    table = pa.table({"id": [f"r{i}" for i in range(40)], "embedding": [list(map(float, v)) for v in vecs],
                      "body": [f"text {i}" for i in range(40)], "version": ["v1"] * 25 + ["v2"] * 15})
    pq.write_table(table, tmp_path / "part.parquet")
    source = ParquetSource(tmp_path / "part.parquet", Columns(text="body"))
    drawn = source.draw("v2", size=10, seed=0, dimension=DIM)
    assert len(drawn) == 10 and all(int(i[1:]) >= 25 for i in drawn.ids)
    np.testing.assert_allclose(drawn.vectors[0], vecs[int(drawn.ids[0][1:])], rtol=1e-6)
    with pytest.raises(SourceError, match="does not exist"):
        ParquetSource(tmp_path / "missing.parquet", Columns()).draw("v1", 1, 0, DIM)


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_texts_for_the_attacker_are_drawn_beside_the_sample_never_from_it(kind, sqlite_url, tmp_path):
    rows = two_versions(as_bytes=True)
    rows[0]["body"] = None                      # rows without text are never drawn
    if kind == "sqlite":
        production_table(sqlite_url, rows)
        source = SqlTableSource(sqlite_url, "prod_vectors", COLUMNS)
    else:
        path = tmp_path / "prod.parquet"
        pq.write_table(pa.Table.from_pylist([{**r, "embedding": np.frombuffer(r["embedding"], "<f4").tolist()}
                                             for r in rows]), path)
        source = ParquetSource(path, COLUMNS)
    assert source.count_texts("v1") == 29 and source.count_texts("v2") == 20
    sample = source.draw("v1", size=10, seed=1, dimension=DIM)
    texts = source.draw_texts("v1", 15, seed=2, exclude=sample.ids)
    assert len(texts) == 15 and not set(texts) & set(sample.texts) and "text 0" not in texts
    assert texts == source.draw_texts("v1", 15, seed=2, exclude=sample.ids)        # reproducible for a seed
    left = 29 - len(set(sample.ids) - {"1"})                                        # row 1 has no text
    assert len(source.draw_texts("v1", 100, seed=2, exclude=sample.ids)) == left    # all that is left


def test_a_label_column_comes_with_the_sample(sqlite_url):
    rows = [{**row, "segment": "a" if i % 2 else "b"} for i, row in enumerate(two_versions(as_bytes=True))]
    engine = sa.create_engine(sqlite_url)
    meta = sa.MetaData()
    t = sa.Table("prod_vectors", meta, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("embedding", sa.LargeBinary), sa.Column("body", sa.Text), sa.Column("version", sa.Text),
                 sa.Column("created_at", sa.DateTime(timezone=True)), sa.Column("segment", sa.Text))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)
    engine.dispose()
    columns = Columns(**{**COLUMNS.__dict__, "label": "segment"})
    drawn = SqlTableSource(sqlite_url, "prod_vectors", columns).draw("v1", size=12, seed=1, dimension=DIM)
    by_id = {str(r["id"]): r["segment"] for r in rows}
    assert drawn.labels == tuple(by_id[i] for i in drawn.ids)
    assert SqlTableSource(sqlite_url, "prod_vectors", COLUMNS).draw("v1", 5, 1, DIM).labels is None
