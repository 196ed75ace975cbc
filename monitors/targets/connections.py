"""A target's Airflow connection: inside a task through the Task SDK (and any secrets backend),
elsewhere (CLI, web app) from `AIRFLOW_CONN_<ID>`, as the ledger's own connection."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from monitors.ledger.database import airflow_connection
from monitors.targets import TargetUnavailable


def connection(conn_id: str):
    conn = airflow_connection(conn_id)
    if conn is None:
        raise TargetUnavailable(f"connection {conn_id} is not defined (set AIRFLOW_CONN_{conn_id.upper()} "
                                "or define it in Airflow)")
    return conn


def base_url(conn) -> str:
    """`host` may be a whole URL (https://cd.example.com/hooks); else schema://host:port."""
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise TargetUnavailable(f"connection {conn.conn_id}: no host")
    if "://" not in host:   # schema http when empty
        host = f"{conn.schema or 'http'}://{host}"
    parts = urlsplit(host)
    try:
        has_port = parts.port is not None
    except ValueError:
        raise TargetUnavailable(f"connection {conn.conn_id}: host {parts.hostname!r} has a bad port") from None
    if conn.port and not has_port:
        parts = parts._replace(netloc=f"{parts.netloc}:{int(conn.port)}")
    return urlunsplit(parts)
