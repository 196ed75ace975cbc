"""Builders for small but real test setups: production tables and configuration files."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import uvicorn
import yaml

from audits.corpus import generate_messages


def production_table(url: str, rows: list[dict], table: str = "prod_vectors", vector_type=None) -> None:
    """Create a production table: id, embedding (float array on PostgreSQL, bytes elsewhere), body, version."""
    engine = sa.create_engine(url)
    if vector_type is None:
        vector_type = sa.ARRAY(sa.REAL) if engine.dialect.name == "postgresql" else sa.LargeBinary
    meta = sa.MetaData()
    t = sa.Table(table, meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("embedding", vector_type),
                 sa.Column("body", sa.Text), sa.Column("version", sa.String(16)),
                 sa.Column("created_at", sa.DateTime(timezone=True)))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)
    engine.dispose()


def pgvector_table(url: str, rows: list[dict], dimension: int | None, table: str = "prod_vectors") -> None:
    """A production table whose embedding is a pgvector `vector(dimension)` column (`vector`, any
    dimension, when None); creates the extension in the database first."""
    engine = sa.create_engine(url)
    column = f"vector({dimension})" if dimension else "vector"
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        conn.execute(sa.text(f"CREATE TABLE {table} (id integer PRIMARY KEY, embedding {column}, body text, "
                             "version varchar(16), created_at timestamptz)"))
        if rows:
            conn.execute(sa.text(f"INSERT INTO {table} (id, embedding, body, version, created_at) "
                                 "VALUES (:id, CAST(:embedding AS vector), :body, :version, :created_at)"),
                         [{**row, "embedding": "[" + ",".join(repr(float(x)) for x in row["embedding"]) + "]"}
                          for row in rows])
    engine.dispose()


def rows_for(version: str, texts: list[str], vectors: np.ndarray, start_id: int, as_bytes: bool) -> list[dict]:
    now = datetime.now(UTC)
    return [{"id": start_id + i, "body": text, "version": version, "created_at": now,
             "embedding": vec.astype("<f4").tobytes() if as_bytes else [float(x) for x in vec]}
            for i, (text, vec) in enumerate(zip(texts, vectors, strict=True))]


def messages(n: int, seed: int) -> list[str]:
    return [m.text for m in generate_messages(n, seed)]


def write_config(path: Path, source_url: str, table: str = "prod_vectors", sigma_v1: float = 0.2,
                 aux_size: int = 600, epochs: int = 30, sample_size: int = 120, thresholds: dict | None = None,
                 artifacts: Path | None = None, cache: Path | None = None, probes: dict | None = None,
                 canaries: int = 60) -> Path:
    config = {
        "artifacts": {"root": str(artifacts or path.parent / "artifacts"), "retention_days": 30},
        "cache_dir": str(cache or path.parent / "cache"),
        "deployments": {
            "support-search": {
                "source": {"kind": "sql", "url": source_url, "table": table,
                           "columns": {"id": "id", "vector": "embedding", "version": "version", "text": "body",
                                       "created_at": "created_at"}},
                "versions": {
                    "v1": {"transform": {"kind": "gaussian_noise", "sigma": sigma_v1}},
                    "v2": {"transform": {"kind": "none"}},
                },
                "active_version": "v1",
                "sample_size": sample_size,
                "auxiliary_corpus": {"kind": "synthetic", "size": aux_size, "seed": 1},
                "canaries": {"count": canaries, "seed": 7},
                "probes": {"bow_inversion": {"epochs": epochs, "bootstrap_resamples": 500}, **(probes or {})},
                "thresholds": thresholds if thresholds is not None else
                {"bow_inversion.token_f1": {"warn": 0.45, "gate": 0.5, "rollback": 0.55}},
            }
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` on a free port in a background thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def airflow_metadata_db(pg_admin_url: sa.URL, beside: str) -> Iterator[str]:
    """A fresh PostgreSQL database for Airflow's metadata, named after the test's ledger database
    `beside` (a URL), dropped afterwards; yields its URL."""
    name = beside.rsplit("/", 1)[1] + "_af"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def ledger_connection(ledger_url: str) -> str:
    """The ledger as the Airflow connection `embwarden_db` (JSON form of AIRFLOW_CONN_EMBWARDEN_DB)."""
    url = sa.engine.make_url(ledger_url)
    return json.dumps({"conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username,
                       "schema": url.database})


@contextmanager
def migrated_airflow(pg_admin_url: sa.URL, ledger_url: str, home: Path, config: Path,
                     **extra_env: str) -> Iterator[tuple[dict, str]]:
    """Everything `airflow dags test` needs: a migrated Airflow home on its own PostgreSQL metadata
    database, our DAGs, the ledger as the connection `embwarden_db` and `config` as the configuration.
    Yields the environment and the metadata database's URL."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW_CONN_EMBWARDEN_DB": ledger_connection(ledger_url),
           "EMBWARDEN_CONFIG": str(config), "HF_HUB_OFFLINE": "1", **extra_env}
    env.pop("EMBWARDEN_DB_URL", None)   # the ledger is reached through the connection, as in production
    with airflow_metadata_db(pg_admin_url, ledger_url) as metadata_url:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_url
        subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                       capture_output=True)
        yield env, metadata_url
