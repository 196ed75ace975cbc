"""Shared fixtures: the bundled encoder, real PostgreSQL databases, small configurations."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from audits.encoders import LocalEncoder, bundled_model_dir
from tests.object_store import object_store, s3_bucket  # noqa: F401  (a real S3-compatible server)
from tests.receivers import mail_catcher, webhook_receiver  # noqa: F401  (real SMTP and HTTP receivers)

PG_URL = os.environ.get("EMBWARDEN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def encoder() -> LocalEncoder:
    return LocalEncoder(bundled_model_dir())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One `cache_dir` for the session: embeddings of public corpora and the attack models fitted on them.

    The cache is keyed by all a fit depends on (pipeline, corpus, probe settings, seed), so a test that
    needs a model another test fitted loads it, as every scheduled audit after the first does; a test
    about fitting or caching itself keeps a cache of its own. Nothing fitted on production text is
    ever written here (tests/monitors/tasks/test_real_text.py checks that with a cache of its own).
    """
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def pg_admin_url() -> sa.URL:
    url = make_url(PG_URL).set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {url.render_as_string(hide_password=True)} ({exc.orig}). "
            "Start it with scripts/ensure-postgres.sh or point EMBWARDEN_TEST_PG_URL at a server.",
            pytrace=False,
        )
    finally:
        engine.dispose()
    return url


@pytest.fixture
def pg_url(pg_admin_url: sa.URL):
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"embwarden_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_admin_url.set(database=name).render_as_string(hide_password=False)
    yield url
    from monitors.ledger.database import _engine_for

    _engine_for.cache_clear()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def ledger(pg_url, monkeypatch):
    """A migrated PostgreSQL ledger, reached the way tasks reach it (EMBWARDEN_DB_URL)."""
    from monitors.ledger.database import migrate

    monkeypatch.delenv("AIRFLOW_CONN_EMBWARDEN_DB", raising=False)
    monkeypatch.setenv("EMBWARDEN_DB_URL", pg_url)
    migrate(pg_url)
    return pg_url
