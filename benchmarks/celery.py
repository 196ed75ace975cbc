"""The distributed path's cost (issue 18), for `make bench SECTIONS=celery`.

- `celery_run_seconds` / `local_run_seconds`: the same audit of two deployments (both pass, attack
  models cached by a first run), queued to end, on two Airflow stacks on loopback: CeleryExecutor with
  two workers (Redis broker) and run data and caches on an S3 store (SeaweedFS), against
  LocalExecutor with local folders. `celery_over_local` is their ratio.
- `object_store_sample_seconds`: writing and reading back a 10,000-vector sample (384-d, with
  texts) through the S3 store, best of three.

Each stack gets fresh PostgreSQL databases (ledger, metadata) on the local server, dropped after.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("EMBWARDEN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DEPLOYMENTS = ("support-search", "notes-search")


@contextmanager
def database() -> str:
    admin_url = sa.engine.make_url(PG).set(drivername="postgresql+psycopg2")
    name = f"embwarden_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url, admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def config_for(folder: Path, ledger: str, root: str, cache: str, connection: str | None) -> Path:
    from tests.helpers import write_config

    path = write_config(folder / "embwarden.yaml", source_url=ledger, sample_size=100, probes={
        "candidate_inversion": {"candidates": 20, "max_trials": 10, "bootstrap_resamples": 200}})
    config = yaml.safe_load(path.read_text())
    config["artifacts"] = {"root": root, "retention_days": 30, **({"connection": connection} if connection else {})}
    config["cache_dir"] = cache
    second = json.loads(json.dumps(config["deployments"]["support-search"]))
    second["source"]["table"] = "notes_vectors"
    config["deployments"]["notes-search"] = second
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def production(ledger: str) -> None:
    from audits.encoders import LocalEncoder, bundled_model_dir
    from audits.transforms import GaussianNoise
    from tests.helpers import messages, production_table, rows_for

    encoder = LocalEncoder(bundled_model_dir())
    for table, seed in (("prod_vectors", 11), ("notes_vectors", 13)):
        texts = messages(120, seed=seed)
        vectors = GaussianNoise(0.2).apply(encoder.encode(texts), np.random.default_rng(seed))
        production_table(ledger, rows_for("v1", texts, vectors, 1, as_bytes=False), table=table)


def timed_audit(executor: str, env: dict[str, str], root: str | None, workers: int) -> float:
    """A first (scheduled) run fits and caches the models; a second, triggered, is timed queued to end."""
    from tests.helpers import airflow_metadata_db, ledger_connection
    from tests.integration.airflow_stack import AirflowStack
    from tests.integration.test_scheduled import last_tick

    with tempfile.TemporaryDirectory() as scratch, database() as (admin_url, ledger):
        folder = Path(scratch)
        production(ledger)
        config = config_for(folder, ledger, root or str(folder / "artifacts"),
                            (root.rsplit("/", 1)[0] + "/cache") if root else str(folder / "cache"),
                            env.pop("connection", None))
        with airflow_metadata_db(admin_url, ledger) as metadata_url:
            if executor == "CeleryExecutor":
                env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + metadata_url
            stack = AirflowStack(folder / "airflow", metadata_url, executor=executor, parallelism=8, extra_env={
                **env, "AIRFLOW_CONN_EMBWARDEN_DB": ledger_connection(ledger), "EMBWARDEN_CONFIG": str(config),
                "EMBWARDEN_AUDIT_SCHEDULE": last_tick(datetime.now(UTC))[0]})
            stack.env.pop("EMBWARDEN_DB_URL", None)
            stack.migrate()
            with stack:
                for n in range(workers):
                    stack.start_worker(f"w{n + 1}", ["default"])
                stack.unpause("privacy_audit")
                stack.wait_for(lambda: done(stack, 1), 1500, "the first (fitting) run")
                stack.cli("dags", "trigger", "privacy_audit")
                run = stack.wait_for(lambda: done(stack, 2), 1500, "the cached run")
        return (run["end_date"] - run["queued_at"]).total_seconds()


def done(stack, count: int):
    runs = stack.dag_runs("privacy_audit")
    if len(runs) >= count and runs[count - 1]["state"] in ("success", "failed"):
        assert runs[count - 1]["state"] == "success", stack.tails()
        return runs[count - 1]
    return None


def sample_seconds(store, bucket: str) -> float:
    from audits.results import Sample
    from monitors import artifacts
    from monitors.config.deployment import object_store_path

    rng = np.random.default_rng(0)
    n = 10_000
    drawn = Sample(ids=tuple(str(i) for i in range(n)), vectors=rng.normal(size=(n, 384)).astype(np.float32),
                   texts=tuple(f"ticket {i}: my parcel was delivered to the wrong address" for i in range(n)),
                   version="v1")
    folder = artifacts.run_dir(object_store_path(f"s3://{bucket}/bench", "embwarden_store"), "dep", "dag", "run")
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        artifacts.write_sample(folder, drawn)
        back = artifacts.read_sample(folder)
        best = min(best, time.perf_counter() - started)
        assert len(back) == n
    artifacts.delete_sample(folder)
    return best


def celery_figures() -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import redis

    from tests.object_store import ObjectStore

    with tempfile.TemporaryDirectory() as scratch:
        store = ObjectStore.start(Path(scratch) / "weed")
        try:
            os.environ["AIRFLOW_CONN_EMBWARDEN_STORE"] = store.connection()
            sample = sample_seconds(store, store.bucket())
            bucket = store.bucket()
            broker = redis.Redis(host="127.0.0.1", port=6379, db=int(np.random.randint(1, 16)))
            broker.flushdb()
            celery = timed_audit("CeleryExecutor", {
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{broker.connection_pool.connection_kwargs['db']}",
                "AIRFLOW_CONN_EMBWARDEN_STORE": store.connection(), "connection": "embwarden_store"},
                f"s3://{bucket}/artifacts", workers=2)
            broker.flushdb()   # leave the machine's Redis as it was
        finally:
            store.stop()
    local = timed_audit("LocalExecutor", {}, None, workers=0)
    return {"celery_run_seconds": round(celery, 1), "local_run_seconds": round(local, 1),
            "celery_over_local": round(celery / local, 2), "object_store_sample_seconds": round(sample, 2)}
