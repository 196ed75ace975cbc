"""Sources: where a deployment's production embeddings are read from.

A source draws a reproducible sample for one version: it lists the ids of that version, picks
`size` of them with a seeded generator, then reads only those rows, in chunks, so memory stays
bounded by the sample, not the table. Vectors may be stored as float arrays (PostgreSQL
`real[]`/`float8[]`, Parquet lists), float32 bytes, or JSON text.

A source only reads: a vector it cannot decode at all is an InvalidSample here, but a wrong
dimension or non-finite values are kept (with each row's stored dimension and `created_at`) for
the sample validation (monitors.validation) to judge, naming the expectation and the rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audits.errors import InvalidSample, SourceError
from audits.results import Sample

FETCH_CHUNK = 1000


@dataclass(frozen=True)
class Columns:
    id: str = "id"
    vector: str = "embedding"
    version: str = "version"
    text: str | None = None
    created_at: str | None = None


def decode_vector(value, row_id) -> np.ndarray:
    """One stored vector as float32, whatever its storage form."""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, (bytes, bytearray)):
        if len(value) % 4:
            raise InvalidSample(f"row id={row_id}: vector has {len(value)} bytes, expected a multiple of 4 (float32)")
        return np.frombuffer(value, dtype="<f4").copy()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidSample(f"row id={row_id}: vector is text but not a JSON array") from None
    if value is None:
        raise InvalidSample(f"row id={row_id}: vector is NULL")
    try:
        return np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidSample(f"row id={row_id}: vector is not a list of numbers") from None


def assemble_sample(rows: Iterable[tuple], version: str, dimension: int, with_text: bool) -> Sample:
    """Build a Sample from (id, vector, text[, created_at]) rows; rows of another dimension are cut or
    zero-padded to `dimension`, their stored dimension kept in `dims`."""
    ids, vectors, texts, dims, created = [], [], [], [], []
    for row in rows:
        row_id, raw, text = row[:3]
        vector = decode_vector(raw, row_id)
        dims.append(int(vector.shape[0]))
        fitted = np.zeros(dimension, dtype=np.float32)
        fitted[: min(dimension, vector.shape[0])] = vector[:dimension]
        ids.append(str(row_id))
        vectors.append(fitted)
        texts.append("" if text is None else str(text))
        created.append(_epoch(row[3]) if len(row) > 3 else None)
    if not ids:
        raise InvalidSample(f"the sample for version {version} is empty, expected at least 1 row")
    return Sample(ids=tuple(ids), vectors=np.vstack(vectors), texts=tuple(texts) if with_text else None,
                  version=version, dims=tuple(dims), created_at=tuple(created))


def _epoch(value) -> float | None:
    """A stored `created_at` as UTC epoch seconds; naive timestamps are taken as UTC."""
    from datetime import UTC, datetime

    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if hasattr(value, "timestamp"):   # pandas / pyarrow timestamps
        return float(value.timestamp())
    return None


def _created_at(columns: Columns) -> str:
    if columns.created_at is None:
        raise SourceError("source.columns.created_at: a time window (drift checks) needs the column that says when "
                          "each vector was created")
    return columns.created_at


def _utc(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def choose_ids(ids: Sequence, size: int, seed: int, where: str) -> list:
    if not ids:
        raise InvalidSample(f"{where} has no rows, expected at least 1")
    ordered = sorted(ids, key=str)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ordered), size=min(size, len(ordered)), replace=False)
    return [ordered[i] for i in sorted(picked)]


class SqlTableSource:
    """A table reachable with a SQLAlchemy URL (PostgreSQL in production, SQLite for the demo)."""

    def __init__(self, url: str, table: str, columns: Columns, schema: str | None = None) -> None:
        self.url = url
        self.table = table
        self.schema = schema
        self.columns = columns

    def _where(self) -> str:
        from sqlalchemy.engine import make_url

        safe = make_url(self.url).render_as_string(hide_password=True)
        return f"table {self.table!r} in {safe}"

    def _table(self, engine):
        import sqlalchemy as sa

        try:
            table = sa.Table(self.table, sa.MetaData(), schema=self.schema, autoload_with=engine)
        except sa.exc.NoSuchTableError:
            raise SourceError(f"source.table: {self._where()} does not exist") from None
        except sa.exc.OperationalError as exc:
            raise SourceError(f"source: cannot reach {self._where()}: {exc.orig}") from None
        wanted = {"id": self.columns.id, "vector": self.columns.vector, "version": self.columns.version,
                  "text": self.columns.text, "created_at": self.columns.created_at}
        for field, name in wanted.items():
            if name is not None and name not in table.c:
                raise SourceError(
                    f"source.columns.{field}: column {name!r} not found in {self._where()}; "
                    f"it has {sorted(table.c.keys())}"
                )
        return table

    def draw(self, version: str, size: int, seed: int, dimension: int, since: float | None = None) -> Sample:
        """`size` rows of `version`, or of its rows created at or after `since` (UTC epoch seconds)."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        try:
            table = self._table(engine)
            c = self.columns
            where = table.c[c.version] == version
            if since is not None:
                where = sa.and_(where, table.c[_created_at(c)] >= _utc(since))
            with engine.connect() as conn:
                ids = conn.execute(sa.select(table.c[c.id]).where(where)).scalars().all()
                chosen = choose_ids(ids, size, seed, f"version {version} in {self._where()}")
                text_col = table.c[c.text] if c.text else sa.null()
                created_col = table.c[c.created_at] if c.created_at else sa.null()
                rows: dict = {}
                for start in range(0, len(chosen), FETCH_CHUNK):
                    chunk = chosen[start : start + FETCH_CHUNK]
                    query = sa.select(table.c[c.id], table.c[c.vector], text_col, created_col).where(
                        table.c[c.id].in_(chunk))
                    rows.update({r[0]: r for r in conn.execute(query)})
        except sa.exc.OperationalError as exc:
            raise SourceError(f"source: cannot read {self._where()}: {exc.orig}") from None
        finally:
            engine.dispose()
        return assemble_sample((rows[i] for i in chosen), version, dimension, with_text=c.text is not None)


class ParquetSource:
    """A Parquet file or directory of files."""

    def __init__(self, path: Path, columns: Columns) -> None:
        self.path = Path(path)
        self.columns = columns

    def draw(self, version: str, size: int, seed: int, dimension: int, since: float | None = None) -> Sample:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        if not self.path.exists():
            raise SourceError(f"source.path: {self.path} does not exist")
        c = self.columns
        dataset = ds.dataset(self.path, format="parquet")
        for field, name in (("id", c.id), ("vector", c.vector), ("version", c.version), ("text", c.text),
                            ("created_at", c.created_at)):
            if name is not None and name not in dataset.schema.names:
                raise SourceError(f"source.columns.{field}: column {name!r} not in {self.path}; "
                                  f"it has {dataset.schema.names}")
        where = pc.field(c.version) == version
        if since is not None:
            where = where & (pc.field(_created_at(c)) >= _utc(since))
        ids = dataset.to_table(columns=[c.id], filter=where).column(c.id).to_pylist()
        chosen = choose_ids(ids, size, seed, f"version {version} in {self.path}")
        columns = [c.id, c.vector] + ([c.text] if c.text else []) + ([c.created_at] if c.created_at else [])
        table = dataset.to_table(columns=columns, filter=pc.field(c.id).isin(chosen))
        data = table.to_pydict()
        texts = data.get(c.text) or [None] * table.num_rows
        created = data.get(c.created_at) or [None] * table.num_rows
        rows = {i: (i, v, t, at) for i, v, t, at in zip(data[c.id], data[c.vector], texts, created, strict=True)}
        return assemble_sample((rows[i] for i in chosen), version, dimension, with_text=c.text is not None)
