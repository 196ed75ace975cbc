"""`make demo`: the whole loop on the embedded default (SQLite, bundled MiniLM, synthetic data).

1. Seeds the production table of `support-search` with embeddings of synthetic messages made by
   version v1 (heavy Gaussian noise) and by version v2 (no noise); starts a mail catcher (a real
   SMTP server on loopback, each mail saved as .eml) and the reference embedding service.
2. Runs `privacy_audit` with `airflow dags test` while v1 is active: it passes.
3. Activates v2 (as a deployment would); the service serves v2. The audit runs again: v2 leaks,
   the gate closes, the deployment is rolled back to v1, the alert is mailed, the re-audit of v1
   is asked for, and the service answers 503.
4. Runs the re-audit (the scheduler starts it from the Asset event; here `dags test` does): v1
   passes, the gate reopens, the resolution is mailed, and the service serves v1.
Prints one `demo:` line per step; the last two are the rollback and the re-audit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

DEPLOYMENT = "support-search"
ROWS_PER_VERSION = 500


def environment(root: Path, ledger: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(root / ".airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "EMBWARDEN_CONFIG": str(root / "embwarden.yaml"),
        "EMBWARDEN_HOME": str(root / ".embwarden"),
        "AIRFLOW_CONN_EMBWARDEN_DB": json.dumps({"conn_type": "sqlite", "host": str(ledger)}),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def seed_production(config, path: Path) -> None:
    """Write the production table: v1's and v2's embeddings of different synthetic messages."""
    from audits.corpus import generate_messages
    from monitors.deployments import build_pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    meta = sa.MetaData()
    table = sa.Table("support_embeddings", meta,
                     sa.Column("id", sa.Integer, primary_key=True), sa.Column("embedding", sa.LargeBinary),
                     sa.Column("body", sa.Text), sa.Column("version", sa.String(16), index=True),
                     sa.Column("created_at", sa.DateTime))
    meta.create_all(engine)
    start = datetime.now(UTC) - timedelta(days=2)
    rows, next_id = [], 1
    for offset, version in enumerate(("v1", "v2")):
        messages = generate_messages(ROWS_PER_VERSION, seed=1000 + offset)
        vectors = build_pipeline(config, DEPLOYMENT, version).embed(
            [m.text for m in messages], np.random.default_rng(2000 + offset))
        for i, (message, vector) in enumerate(zip(messages, vectors, strict=True)):
            rows.append({"id": next_id, "embedding": vector.astype("<f4").tobytes(), "body": message.text,
                         "version": version, "created_at": start + timedelta(hours=offset * 24, seconds=i)})
            next_id += 1
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    engine.dispose()


class MailCatcher:
    """A real SMTP server on loopback that saves each mail it receives as an .eml file."""

    def __init__(self, folder: Path) -> None:
        from aiosmtpd.controller import Controller

        self.folder, self.count = folder, 0
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.count += 1
        (self.folder / f"{self.count}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 OK"

    def subject(self, number: int) -> str:
        import email

        return email.message_from_bytes((self.folder / f"{number}.eml").read_bytes())["Subject"]

    def connection(self) -> str:
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0}})


class Service:
    """The reference embedding service under uvicorn on loopback, in a background thread."""

    def __init__(self) -> None:
        import threading

        import uvicorn

        from monitors.service.app import create_app

        self.url = f"http://127.0.0.1:{free_port()}"
        config = uvicorn.Config(create_app(DEPLOYMENT, cache_seconds=0.5), host="127.0.0.1",
                                port=int(self.url.rsplit(":", 1)[1]), log_level="warning")
        self.server = uvicorn.Server(config)
        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.05)

    def embed(self) -> str:
        """One request with a harmless text: `200(v1)` or `503` and the gate's reason."""
        import httpx

        time.sleep(0.6)  # the service reads the gate at most every 0.5 s
        reply = httpx.post(f"{self.url}/v1/embeddings", json={"input": ["where is my parcel?"]}, timeout=120)
        if reply.status_code == 200:
            return f"200({reply.headers['X-Embwarden-Version']})"
        return f"{reply.status_code}"

    def stop(self) -> None:
        self.server.should_exit = True


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow(args: list[str], log_path: Path) -> None:
    exe = Path(sys.executable).with_name("airflow")
    with log_path.open("w") as log:
        proc = subprocess.run([str(exe), *args], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-40:]
        raise SystemExit(f"airflow {' '.join(args)} failed (exit {proc.returncode}); last lines of {log_path}:\n"
                         + "\n".join(tail))


def audit(log_path: Path) -> str:
    from monitors.gates import gate_state
    from monitors.ledger.database import session_scope
    from monitors.ledger.models import AuditRun

    airflow(["dags", "test", "privacy_audit", "-c", json.dumps({"deployment": DEPLOYMENT})], log_path)
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun).order_by(AuditRun.id.desc()).limit(1))
        gate = gate_state(session, run.deployment)
        return (f"demo: {DEPLOYMENT} version={run.version.name} verdict={run.verdict or run.status} "
                f"gate={gate.state if gate else 'open'} active={run.deployment.active_version.name}")


def main() -> int:
    root = Path.cwd()
    demo_dir = root / ".embwarden" / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    shutil.rmtree(root / ".embwarden" / "artifacts", ignore_errors=True)
    demo_dir.mkdir(parents=True)
    os.environ.update(environment(root, demo_dir / "ledger.db"))
    mail = MailCatcher(demo_dir / "mail")
    mail._controller.start()
    os.environ["AIRFLOW_CONN_EMBWARDEN_SMTP"] = mail.connection()

    from monitors.config import load_config
    from monitors.ledger.database import migrate, session_scope
    from monitors.ledger.registry import sync
    from monitors.versions import activate

    for noisy in ("alembic", "mail.log", "uvicorn", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("monitors.service.app").setLevel(logging.ERROR)  # the demo prints what the service does
    started = time.perf_counter()
    config = load_config()
    seed_production(config, demo_dir / "production.db")
    migrate()
    with session_scope() as session:
        sync(session, config)
    airflow(["db", "migrate"], demo_dir / "airflow-db-migrate.log")
    service = Service()
    print(f"demo: seeded {2 * ROWS_PER_VERSION} production vectors and set up Airflow in "
          f"{time.perf_counter() - started:.0f} s; mail catcher on 127.0.0.1:{mail.port}, embedding service on "
          f"{service.url}; logs under .airflow/logs and {demo_dir}", flush=True)
    try:
        print(f"{audit(demo_dir / 'audit-1.log')} service={service.embed()} report={report_path()}", flush=True)
        with session_scope() as session:
            activate(session, DEPLOYMENT, "v2", actor="demo", reason="deploy v2: noise removed to improve search")
        print(f"demo: deployed v2: the embedding service answers {service.embed()}", flush=True)
        rolled_back = audit(demo_dir / "audit-2.log")
        print(f"demo: alert mailed to the catcher: \"{mail.subject(1)}\" ({demo_dir / 'mail' / '1.eml'})",
              flush=True)
        print(f"{rolled_back} service={service.embed()} mail={mail.count} report={report_path()}", flush=True)
        # The rollback emitted an event on the embwarden_reaudit Asset; the scheduler starts the
        # re-audit from it. `dags test` runs no scheduler, so the demo starts that run itself.
        reaudited = audit(demo_dir / "audit-3.log")
        print(f"{reaudited} service={service.embed()} mail={mail.count} (\"{mail.subject(mail.count)}\") "
              f"report={report_path()} total={time.perf_counter() - started:.0f}s", flush=True)
    finally:
        service.stop()
        mail._controller.stop()
    return 0


def report_path() -> str:
    from monitors.ledger.database import session_scope
    from monitors.ledger.models import AuditRun

    with session_scope() as session:
        return session.scalar(sa.select(AuditRun.report_path).order_by(AuditRun.id.desc()).limit(1))


if __name__ == "__main__":
    sys.exit(main())
