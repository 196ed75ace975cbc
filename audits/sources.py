"""Sources: where a deployment's production embeddings are read from.

A source draws a reproducible sample for one version. On PostgreSQL the database picks `size` rows
by a seeded hash of their id and the worker streams just those rows through a server-side cursor,
so it holds the sample, never the table (SqlTableSource); SQLite (the demo) and Parquet list the
version's ids, pick with a seeded generator, then read only those rows. Vectors may be stored as a
pgvector column (`vector`, `halfvec`, `sparsevec`), float arrays (PostgreSQL `real[]`/`float8[]`,
Parquet lists), float32 bytes, or JSON text.

A source only reads: a vector it cannot decode at all is an InvalidSample here, but a wrong
dimension or non-finite values are kept (with each row's stored dimension and `created_at`) for
the sample validation (monitors.validation) to judge, naming the expectation and the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audits.errors import InvalidSample, SourceError, SourceUnavailable
from audits.pgvector import PGVECTOR_TYPES, from_vector_send, pg_type, register_pgvector_types
from audits.results import Sample
from audits.sample_rows import SampleRows, assemble_sample, choose_ids, every_copy

FETCH_CHUNK = 1000


@dataclass(frozen=True)
class Columns:
    id: str = "id"
    vector: str = "embedding"
    version: str = "version"
    text: str | None = None
    created_at: str | None = None
    label: str | None = None      # a segment of each row (category, source): probes are also scored per segment


def _created_at(columns: Columns) -> str:
    if columns.created_at is None:
        raise SourceError("source.columns.created_at: a time window (drift checks) needs the column that says when "
                          "each vector was created")
    return columns.created_at


def _utc(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


class SqlTableSource:
    """A table reachable with a SQLAlchemy URL (PostgreSQL in production, SQLite for the demo).

    On PostgreSQL the sampling runs in the database: the sample is the `size` rows of the version
    (and window) with the smallest seeded 64-bit hash of their id, `hashtextextended(id::text,
    seed)`. That is a uniform random subset, exactly `size` rows when as many exist, the same for
    the same seed whatever the table's physical order, and the server keeps only `size` keys while
    it scans (a top-N sort; an index on (version, id) or (version, created_at) INCLUDE (id) makes
    the scan index-only). The chosen rows are then read in one statement through a server-side
    cursor, `FETCH_CHUNK` rows at a time, so the client holds the sample, never the table. The
    sample comes in hash order: any prefix of it is itself a uniform sample.

    A pgvector column (`vector`, `halfvec`, `sparsevec`) is read in pgvector's binary form
    (`vector_send`: no text to parse), and its declared dimension is checked against the
    pipeline's before anything is read. On other databases (SQLite) the ids are listed and chosen
    in Python, as `choose_ids` does.
    """

    PGVECTOR_TYPES = PGVECTOR_TYPES

    def __init__(self, url: str, table: str, columns: Columns, schema: str | None = None,
                 connection: str | None = None) -> None:
        self.url = url
        self.table = table
        self.schema = schema
        self.columns = columns
        self.connection = connection  # the Airflow connection id the URL came from, for messages

    def _where(self) -> str:
        from sqlalchemy.engine import make_url

        safe = make_url(self.url).render_as_string(hide_password=True)
        name = f"{self.schema}.{self.table}" if self.schema else self.table
        if self.connection:
            return f"table {name!r} in Airflow connection {self.connection!r} ({safe})"
        return f"table {name!r} in {safe}"

    def _unreadable(self, exc) -> SourceError:
        """A lost or refused connection is worth a retry; a statement the database refuses is not."""
        import sqlalchemy as sa

        transient = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
        return (SourceUnavailable if transient else SourceError)(
            f"source: cannot read {self._where()}: {self._reason(exc)}")

    def _reason(self, exc) -> str:
        """The driver's message, first line, without the password should a driver quote it."""
        from sqlalchemy.engine import make_url

        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
        password = make_url(self.url).password
        return text.replace(str(password), "***") if password else text

    def _table(self, conn):
        import sqlalchemy as sa

        register_pgvector_types()
        try:
            table = sa.Table(self.table, sa.MetaData(), schema=self.schema, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            raise SourceError(f"source.table: {self._where()} does not exist") from None
        wanted = {"id": self.columns.id, "vector": self.columns.vector, "version": self.columns.version,
                  "text": self.columns.text, "created_at": self.columns.created_at, "label": self.columns.label}
        for field, name in wanted.items():
            if name is not None and name not in table.c:
                raise SourceError(
                    f"source.columns.{field}: column {name!r} not found in {self._where()}; "
                    f"it has {sorted(table.c.keys())}"
                )
        return table

    def _pgvector(self, conn, table, version: str, dimension: int) -> tuple[str, str] | None:
        """(schema, type) of a pgvector column, after checking its declared dimension; None otherwise."""
        import sqlalchemy as sa

        name = conn.dialect.identifier_preparer.format_table(table)
        found = conn.execute(sa.text(
            "SELECT n.nspname, t.typname, a.atttypmod FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE a.attrelid = CAST(:rel AS regclass) AND a.attname = :col AND NOT a.attisdropped"),
            {"rel": name, "col": self.columns.vector}).first()
        if found is None or found.typname not in self.PGVECTOR_TYPES:
            return None
        if found.atttypmod > 0 and found.atttypmod != dimension:
            raise SourceError(
                f"source.columns.vector: column {self.columns.vector!r} of {self._where()} is "
                f"{found.typname}({found.atttypmod}), expected {found.typname}({dimension}): the pipeline of version "
                f"{version} makes vectors of dimension {dimension}")
        return found.nspname, found.typname

    def draw(self, version: str, size: int, seed: int, dimension: int, since: float | None = None) -> Sample:
        """`size` rows of `version`, or of its rows created at or after `since` (UTC epoch seconds)."""
        import sqlalchemy as sa

        try:
            from sqlalchemy.engine import make_url

            # Both statements of a PostgreSQL draw (choose, then read) see one snapshot of the table.
            isolation = {"isolation_level": "REPEATABLE READ"} if make_url(self.url).get_backend_name() == \
                "postgresql" else {}
            engine = sa.create_engine(self.url, **isolation)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise SourceError(f"source: {self._where()}: the URL is not usable: {self._reason(exc)}") from None
        try:
            try:
                conn = engine.connect()
            except sa.exc.DBAPIError as exc:
                raise SourceUnavailable(f"source: cannot reach {self._where()}: {self._reason(exc)}") from None
            with conn:
                table = self._table(conn)
                c = self.columns
                where = table.c[c.version] == version
                scope = f"version {version} in {self._where()}"
                if since is not None:
                    where = sa.and_(where, table.c[_created_at(c)] >= _utc(since))
                    scope += f" created at or after {_utc(since).isoformat()}"
                if conn.dialect.name == "postgresql":
                    built = self._draw_postgres(conn, table, where, scope, version, size, seed, dimension)
                    return built.sample(version, with_text=c.text is not None, with_label=c.label is not None)
                rows = self._draw_listing_ids(conn, table, where, scope, size, seed)
                return assemble_sample(rows, version, dimension, with_text=c.text is not None,
                                       with_label=c.label is not None)
        except sa.exc.DBAPIError as exc:
            raise self._unreadable(exc) from None
        finally:
            engine.dispose()

    def draw_texts(self, version: str, size: int, seed: int, exclude: Iterable[str] = ()) -> list[str]:
        """Up to `size` non-empty texts of `version` from rows whose ids are not in `exclude`, chosen by
        `seed` as `draw` chooses rows (in the database on PostgreSQL); no vectors are read."""
        import sqlalchemy as sa

        if self.columns.text is None:
            raise SourceError("source.columns.text: not set; this source has no texts")
        excluded = {str(i) for i in exclude}
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                table = self._table(conn)
                id_col, text_col = table.c[self.columns.id], table.c[self.columns.text]
                where = sa.and_(table.c[self.columns.version] == version, text_col.is_not(None), text_col != "")
                wanted = size + len(excluded)
                rows: Sequence[Sequence[Any]]  # (id, text)
                if conn.dialect.name == "postgresql":
                    key = sa.func.hashtextextended(sa.cast(id_col, sa.Text),
                                                   sa.literal(int(seed) % (1 << 63), sa.BigInteger))
                    rows = conn.execute(sa.select(id_col, text_col).where(where).order_by(key, id_col)
                                        .limit(wanted)).all()
                else:
                    ids = conn.execute(sa.select(id_col).where(where)).scalars().all()
                    chosen = choose_ids(ids, wanted, seed, f"texts of version {version} in {self._where()}") \
                        if ids else []
                    found: dict = {}
                    for start in range(0, len(chosen), FETCH_CHUNK):
                        chunk = chosen[start:start + FETCH_CHUNK]
                        found.update(conn.execute(sa.select(id_col, text_col).where(id_col.in_(chunk))).all())
                    rows = [(i, found[i]) for i in chosen]
        except sa.exc.DBAPIError as exc:
            raise self._unreadable(exc) from None
        finally:
            engine.dispose()
        return [str(text) for row_id, text in rows if str(row_id) not in excluded and str(text).strip()][:size]

    def count_texts(self, version: str) -> int:
        """How many rows of `version` have a non-empty text."""
        import sqlalchemy as sa

        if self.columns.text is None:
            return 0
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                table = self._table(conn)
                text_col = table.c[self.columns.text]
                return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(
                    table.c[self.columns.version] == version, text_col.is_not(None), text_col != "")).scalar_one())
        except sa.exc.DBAPIError as exc:
            raise self._unreadable(exc) from None
        finally:
            engine.dispose()

    def _selected(self, table, vector):
        import sqlalchemy as sa

        c = self.columns
        return (table.c[c.id], vector, table.c[c.text] if c.text else sa.null(),
                table.c[c.created_at] if c.created_at else sa.null(), table.c[c.label] if c.label else sa.null())

    def _draw_postgres(self, conn, table, where, scope: str, version: str, size: int, seed: int,
                       dimension: int) -> SampleRows:
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql

        c = self.columns
        id_col = table.c[c.id]
        kind = self._pgvector(conn, table, version, dimension)
        vector = table.c[c.vector]
        if kind is not None:
            as_vector = vector if kind[1] == "vector" else sa.cast(vector, pg_type(kind[0], "vector", conn))
            vector = getattr(sa.func, kind[0]).vector_send(as_vector)
        # A signed 64-bit seed; the hash is PostgreSQL's own (hash partitioning's), stable across versions.
        key = sa.func.hashtextextended(sa.cast(id_col, sa.Text), sa.literal(int(seed) % (1 << 63), sa.BigInteger))
        chosen = conn.execute(sa.select(id_col).where(where).order_by(key, id_col).limit(size)).scalars().all()
        if not chosen:
            raise InvalidSample(f"{scope} has no rows, expected at least 1")
        # Without a primary key an id may repeat: every row of a chosen id is read (more than `size`
        # rows then), so that validation sees the repeat and fails the sample naming it.
        free: dict = {}
        for i, row_id in enumerate(chosen):
            free.setdefault(row_id, []).append(i)
        built = SampleRows(len(chosen), dimension)
        ids = sa.bindparam("chosen", list(free), type_=postgresql.ARRAY(id_col.type))
        query = sa.select(*self._selected(table, vector)).where(where, id_col == sa.any_(ids))
        for row_id, raw, text, created_at, label in conn.execute(
                query.execution_options(stream_results=True, yield_per=FETCH_CHUNK)):
            if kind is not None and raw is not None:
                raw = from_vector_send(raw)
            slots = free[row_id]
            built.put(slots.pop(0) if slots else built.grow(), row_id, raw, text, created_at, label)
        return built

    def _draw_listing_ids(self, conn, table, where, scope: str, size: int, seed: int) -> list:
        import sqlalchemy as sa

        id_col = table.c[self.columns.id]
        ids = conn.execute(sa.select(id_col).where(where)).scalars().all()
        chosen = list(dict.fromkeys(choose_ids(ids, size, seed, scope)))
        rows: list = []
        for start in range(0, len(chosen), FETCH_CHUNK):
            chunk = chosen[start : start + FETCH_CHUNK]
            query = sa.select(*self._selected(table, table.c[self.columns.vector])).where(where, id_col.in_(chunk))
            rows.extend(conn.execute(query))
        return every_copy(chosen, rows)


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
                            ("created_at", c.created_at), ("label", c.label)):
            if name is not None and name not in dataset.schema.names:
                raise SourceError(f"source.columns.{field}: column {name!r} not in {self.path}; "
                                  f"it has {dataset.schema.names}")
        where = pc.field(c.version) == version
        if since is not None:
            where = where & (pc.field(_created_at(c)) >= _utc(since))
        ids = dataset.to_table(columns=[c.id], filter=where).column(c.id).to_pylist()
        chosen = choose_ids(ids, size, seed, f"version {version} in {self.path}")
        columns = [c.id, c.vector] + [name for name in (c.text, c.created_at, c.label) if name]
        table = dataset.to_table(columns=columns, filter=where & pc.field(c.id).isin(chosen))
        data = table.to_pydict()
        texts, created, labels = ((data.get(name) if name else None) or [None] * table.num_rows
                                  for name in (c.text, c.created_at, c.label))
        rows = zip(data[c.id], data[c.vector], texts, created, labels, strict=True)
        return assemble_sample(every_copy(chosen, rows), version, dimension, with_text=c.text is not None,
                               with_label=c.label is not None)

    def _texts(self, version: str):
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        c = self.columns
        if c.text is None:
            raise SourceError("source.columns.text: not set; this source has no texts")
        if not self.path.exists():
            raise SourceError(f"source.path: {self.path} does not exist")
        dataset = ds.dataset(self.path, format="parquet")
        if c.text not in dataset.schema.names:
            raise SourceError(f"source.columns.text: column {c.text!r} not in {self.path}; "
                              f"it has {dataset.schema.names}")
        where = (pc.field(c.version) == version) & pc.field(c.text).is_valid() & (pc.field(c.text) != "")
        data = dataset.to_table(columns=[c.id, c.text], filter=where).to_pydict()
        return dict(zip(data[c.id], data[c.text], strict=True))

    def draw_texts(self, version: str, size: int, seed: int, exclude: Iterable[str] = ()) -> list[str]:
        """Up to `size` texts of `version` not in rows `exclude`, chosen by `seed`; no vectors are read."""
        excluded = {str(i) for i in exclude}
        texts = self._texts(version)
        if not texts:
            return []
        chosen = choose_ids(list(texts), size + len(excluded), seed, f"texts of version {version} in {self.path}")
        return [str(texts[i]) for i in chosen if str(i) not in excluded and str(texts[i]).strip()][:size]

    def count_texts(self, version: str) -> int:
        return len(self._texts(version)) if self.columns.text else 0
