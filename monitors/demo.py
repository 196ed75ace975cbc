"""`make demo`: the whole loop on the embedded default (SQLite, bundled MiniLM, synthetic data).

1. Seeds the production table of `support-search` with embeddings of synthetic messages made by
   version v1 (heavy Gaussian noise) and by version v2 (no noise).
2. Runs `privacy_audit` with `airflow dags test` while v1 is active: it passes.
3. Activates v2 (as a deployment would) and runs the audit again: v2 leaks, the gate closes
   and the deployment is rolled back to v1.
Prints one `demo:` line per audit run.
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
    from monitors.runs import build_pipeline

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


def airflow(args: list[str], log_path: Path) -> None:
    exe = Path(sys.executable).with_name("airflow")
    with log_path.open("w") as log:
        proc = subprocess.run([str(exe), *args], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-40:]
        raise SystemExit(f"airflow {' '.join(args)} failed (exit {proc.returncode}); last lines of {log_path}:\n"
                         + "\n".join(tail))


def audit(log_path: Path) -> str:
    from monitors.database import session_scope
    from monitors.ledger import AuditRun
    from monitors.registry import gate_state

    airflow(["dags", "test", "privacy_audit", "-c", json.dumps({"deployment": DEPLOYMENT})], log_path)
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun).order_by(AuditRun.id.desc()).limit(1))
        gate = gate_state(session, run.deployment)
        return (f"demo: {DEPLOYMENT} version={run.version.name} verdict={run.verdict or run.status} "
                f"gate={gate.state if gate else 'open'} active={run.deployment.active_version.name} "
                f"report={run.report_path}")


def main() -> int:
    root = Path.cwd()
    demo_dir = root / ".embwarden" / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    shutil.rmtree(root / ".embwarden" / "artifacts", ignore_errors=True)
    demo_dir.mkdir(parents=True)
    os.environ.update(environment(root, demo_dir / "ledger.db"))

    from monitors.config import load_config
    from monitors.database import migrate, session_scope
    from monitors.registry import activate, sync

    logging.getLogger("alembic").setLevel(logging.WARNING)
    started = time.perf_counter()
    config = load_config()
    seed_production(config, demo_dir / "production.db")
    migrate()
    with session_scope() as session:
        sync(session, config)
    airflow(["db", "migrate"], demo_dir / "airflow-db-migrate.log")
    print(f"demo: seeded {2 * ROWS_PER_VERSION} production vectors and set up Airflow in "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    print(audit(demo_dir / "audit-1.log"), flush=True)
    with session_scope() as session:
        activate(session, DEPLOYMENT, "v2", actor="demo", reason="deploy v2: noise removed to improve search")
    print(audit(demo_dir / "audit-2.log"), flush=True)
    print(f"demo: done in {time.perf_counter() - started:.0f} s; Airflow logs under .airflow/logs, "
          f"ledger {demo_dir / 'ledger.db'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
