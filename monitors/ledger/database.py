"""Where the ledger lives and how to reach it.

The URL comes from the Airflow connection `embwarden_db`, else `EMBWARDEN_DB_URL`, else a SQLite
file for the embedded demo (`$EMBWARDEN_HOME/ledger.db`, default `./.embwarden/ledger.db`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from audits.errors import EmbwardenError

log = logging.getLogger(__name__)

T = TypeVar("T")
CONNECTION_ID = "embwarden_db"
MIGRATIONS = Path(__file__).parent / "migrations"


class LedgerUnavailable(EmbwardenError):
    """The ledger database cannot be reached or is not migrated."""


def embwarden_home() -> Path:
    return Path(os.environ.get("EMBWARDEN_HOME", ".embwarden")).expanduser().resolve()


def connection_url(conn_id: str) -> str | None:
    """A SQLAlchemy URL for an Airflow connection, or None when Airflow does not define it.

    Inside a task this goes through the Task SDK (and so any secrets backend); elsewhere
    (CLI, tests) it reads the connection from the `AIRFLOW_CONN_<ID>` environment variable.
    """
    conn = airflow_connection(conn_id)
    return None if conn is None else url_of(conn)


def url_of(conn) -> str:
    """The SQLAlchemy URL of an Airflow connection (postgres, sqlite, or extra `sqlalchemy_url`)."""
    conn_id = conn.conn_id
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    kind = (conn.conn_type or "").lower()
    if kind in ("postgres", "postgresql"):
        return sa.URL.create("postgresql+psycopg2", username=conn.login or None, password=conn.password or None,
                             host=conn.host or None, port=conn.port or None,
                             database=conn.schema or None).render_as_string(hide_password=False)
    if kind == "sqlite":
        return f"sqlite:///{conn.host}"
    raise EmbwardenError(f"connection {conn_id}: conn_type {kind!r} is not supported; use postgres or sqlite, "
                         "or put a SQLAlchemy URL in the extra field 'sqlalchemy_url'")


def airflow_connection(conn_id: str):
    # Outside a task (CLI, tests, the demo's seeding) only the environment can define it; asking
    # Airflow's secrets backends there would need Airflow's own metadata database.
    if not _task_sdk_active() and f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ:
        return None
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _task_sdk_active() -> bool:
    import sys

    mod = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return bool(mod and getattr(mod, "SUPERVISOR_COMMS", None) is not None)


def ledger_url() -> str:
    url = connection_url(CONNECTION_ID) or os.environ.get("EMBWARDEN_DB_URL")
    if url:
        return url
    home = embwarden_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'ledger.db'}"


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@lru_cache(maxsize=8)
def _engine_for(url: str) -> sa.Engine:
    kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # foreign keys and concurrent readers
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()
    return engine


def engine(url: str | None = None) -> sa.Engine:
    return _engine_for(url or ledger_url())


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    eng = engine(url)
    try:
        session = sessionmaker(eng, expire_on_commit=False)()
    except sa.exc.OperationalError as exc:  # pragma: no cover - sessionmaker is lazy
        raise LedgerUnavailable(f"ledger {safe_url(str(eng.url))} unreachable: {exc.orig}") from None
    try:
        yield session
        session.commit()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        session.rollback()
        where = safe_url(str(eng.url))
        reason = str(exc.orig).strip()
        # A missing table is an unmigrated ledger; a missing database (or server) is not.
        if "no such table" in reason or (isinstance(exc, sa.exc.ProgrammingError) and "relation" in reason
                                         and "does not exist" in reason):
            raise LedgerUnavailable(f"ledger {where} has no embwarden tables: run `embwarden migrate` first") from exc
        if isinstance(exc, sa.exc.ProgrammingError):
            raise
        raise LedgerUnavailable(f"ledger {where} unreachable: {reason.splitlines()[0] if reason else exc}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def row(session: Session, model: type[T], key: Any, **options: Any) -> T:
    """The row of `model` with primary key `key`; one that a run's step expects and is gone (deleted by
    hand, another ledger) is an error naming it, not an AttributeError on None later."""
    found = session.get(model, key, **options)
    if found is None:
        table = getattr(model, "__tablename__", model.__name__)
        raise EmbwardenError(f"{table} {key}: not in the ledger {safe_url(str(session.bind.url))}")
    return found


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Bring the ledger's schema up to `revision` (idempotent)."""
    from alembic import command

    url = url or ledger_url()
    try:
        with engine(url).begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except sa.exc.OperationalError as exc:
        raise LedgerUnavailable(f"ledger {safe_url(url)} unreachable: {exc.orig}".strip()) from None
    log.debug("ledger %s migrated to %s", safe_url(url), revision)   # `embwarden migrate` prints its own line
