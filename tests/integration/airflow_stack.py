"""A whole Airflow 3 on loopback, as production runs it: API server, scheduler (LocalExecutor, or
CeleryExecutor with workers started one by one), dag-processor and triggerer, each an `airflow`
subprocess in its own process group with its log in a file, on a PostgreSQL metadata database.

    stack = AirflowStack(tmp_path / "airflow", metadata_url, extra_env={...})
    stack.migrate()
    with stack:                       # starts the API server, waits until it answers, starts the rest
        stack.unpause("my_dag")       # DAGs are paused when first seen, as Airflow's default has it
        stack.wait_for(lambda: ..., timeout=900, what="a scheduled run")
        stack.api("/api/v2/dags/privacy_audit/dagRuns")
    # leaving the block stops every process of every component, task processes included

With `executor="CeleryExecutor"` (and the broker in extra_env), `stack.start_worker("w1", ["default"])`
starts a Celery worker in a folder of its own (working folder, TMPDIR, HOME and task logs), reporting
itself as host `w1` (core.hostname_callable), so that no two workers share a local disk.

On any failure `stack.tails()` gives the end of each component's log and of every task log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from tests.receivers import free_port

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class StackFailed(AssertionError):
    """A component died, or what was waited for did not happen in time."""


class AirflowStack:
    def __init__(self, home: Path, metadata_url: str, extra_env: dict[str, str] | None = None,
                 dags_folder: Path = REPO / "dags", parallelism: int = 4, executor: str = "LocalExecutor") -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.metadata_url = metadata_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.password = uuid.uuid4().hex
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                           "SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            # Workers reach the API server's Execution API; it checks the tokens the scheduler signs.
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            # Ports of their own, so that stacks of tests running side by side do not collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **(extra_env or {}),
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.workers: dict[str, Path] = {}   # name -> its own folder
        self._logs: dict[str, Any] = {}
        self._token: str | None = None
        self.started_at: float | None = None
        self.orphans: list[str] = []

    # -- running airflow commands ------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise StackFailed(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                              f"{done.stderr[-3000:]}")
        return done

    def migrate(self) -> None:
        self.cli("db", "migrate", timeout=600)

    def unpause(self, dag_id: str, timeout: float = 300) -> None:
        """Unpause a DAG (DAGs are paused when first parsed), waiting for the dag-processor to know it
        (`airflow dags unpause` of a DAG not yet parsed finds nothing to unpause and exits 0)."""
        self.wait_for(lambda: self.paused(dag_id) is not None, timeout, f"the dag-processor to register {dag_id}")
        self.cli("dags", "unpause", dag_id)
        assert self.paused(dag_id) is False, f"{dag_id} is still paused"

    def paused(self, dag_id: str) -> bool | None:
        """Whether the DAG is paused; None while the dag-processor has not registered it."""
        engine = sa.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT is_paused FROM dag WHERE dag_id = :d"), {"d": dag_id}).scalar()
        except sa.exc.ProgrammingError:
            return None
        finally:
            engine.dispose()

    # -- the components ----------------------------------------------------------------------------
    def log_path(self, component: str) -> Path:
        return self.home / f"{component}.log"

    def start(self, timeout: float = 180) -> None:
        self.started_at = time.monotonic()
        commands = {"api-server": ["api-server", "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"],
                    "scheduler": ["scheduler"], "dag-processor": ["dag-processor"], "triggerer": ["triggerer"]}
        for component in COMPONENTS:
            log = self._logs[component] = self.log_path(component).open("w")
            # A session (and so a process group) of its own: stop() ends it with every task process in it.
            self.procs[component] = subprocess.Popen([AIRFLOW, *commands[component]], env=self.env, stdout=log,
                                                     stderr=subprocess.STDOUT, start_new_session=True)
            if component == "api-server":
                # Workers report to its Execution API: a task the scheduler queues before it listens
                # fails its first try (and waits out its retry delay).
                self.wait_for(self._api_answers, timeout, "the API server to answer /api/v2/version")

    def _api_answers(self) -> bool:
        try:
            return httpx.get(self.base + "/api/v2/version", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, name: str, queues: list[str], concurrency: int = 1) -> subprocess.Popen:
        """A Celery worker serving `queues`, in a folder of its own: its working folder, TMPDIR and
        HOME are empty at start and its task logs go under it, so nothing passes between tasks
        through a local disk."""
        folder = self.workers.setdefault(name, self.home.parent / f"worker-{name}")
        for sub in ("cwd", "tmp", "home", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        env = {**self.env, "TMPDIR": str(folder / "tmp"), "HOME": str(folder / "home"),
               "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(folder / "logs"),
               "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.integration.worker_host.name",
               "EMBWARDEN_TEST_WORKER": name, "PYTHONPATH": str(REPO)}
        log = self._logs[f"worker-{name}"] = self.log_path(f"worker-{name}").open("a")
        proc = subprocess.Popen([AIRFLOW, "celery", "worker", "--queues", ",".join(queues), "--concurrency",
                                 str(concurrency), "--celery-hostname", f"{name}@%h", "--skip-serve-logs",
                                 "--without-gossip", "--without-mingle"],
                                env=env, cwd=folder / "cwd", stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[f"worker-{name}"] = proc
        return proc

    def kill_worker(self, name: str) -> None:
        """`kill -9` a worker and every process it started (the task it runs included), as a machine dies."""
        proc = self.procs.pop(f"worker-{name}")
        family = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
        _signal_group(proc.pid, signal.SIGKILL)
        for pid in family:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(10)

    def check_alive(self) -> None:
        for component, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackFailed(f"airflow {component} exited with {proc.returncode}\n{self.tails()}")

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
        """Poll `condition` until it returns something truthy (returned); fail with the logs' tails."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise StackFailed(f"waited {timeout:.0f} s for {what}\n{self.tails()}")
            time.sleep(interval)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM each component's process group (the scheduler first, so it launches nothing more),
        then SIGKILL whatever of it is left, including descendants that left the group."""
        order = [c for c in ("scheduler", *(w for w in self.procs if w.startswith("worker-")), "triggerer",
                             "dag-processor", "api-server") if c in self.procs]
        for component in order:
            proc = self.procs[component]
            try:
                family = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
            except psutil.NoSuchProcess:
                family = [proc.pid]
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)
            for pid in family:
                try:
                    child = psutil.Process(pid)
                    child.kill()
                    child.wait(10)
                except psutil.NoSuchProcess:
                    pass
            if proc.poll() is None:
                proc.wait(10)
        for log in self._logs.values():
            log.close()
        self.procs.clear()
        self.orphans = self._leftovers()

    def _leftovers(self) -> list[str]:
        """Kill any process still running with this AIRFLOW_HOME (none should be); say which they were."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid != os.getpid() and proc.environ().get("AIRFLOW_HOME") == str(self.home):
                    found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def __enter__(self) -> AirflowStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what happened -----------------------------------------------------------------------------
    def tails(self, chars: int = 3000) -> str:
        parts = []
        for component in [*COMPONENTS, *(f"worker-{w}" for w in self.workers)]:
            path = self.log_path(component)
            if path.exists():
                parts.append(f"--- {component} ({path}) ---\n{path.read_text(errors='replace')[-chars:]}")
        for folder in [self.home / "logs", *(w / "logs" for w in self.workers.values())]:
            for path in sorted(folder.rglob("*.log")) if folder.exists() else []:
                text = path.read_text(errors="replace")
                if "ERROR" in text or "Traceback" in text:
                    parts.append(f"--- task log {path} ---\n{text[-chars:]}")
        return "\n".join(parts)

    def api(self, path: str, **params) -> Any:
        """GET a JSON document from the Airflow REST API, as the admin user."""
        if self._token is None:
            r = httpx.post(self.base + "/auth/token", json={"username": "admin", "password": self.password},
                           timeout=30)
            assert r.status_code == 201, r.text
            self._token = r.json()["access_token"]
        r = httpx.get(self.base + path, params=params, headers={"Authorization": f"Bearer {self._token}"},
                      timeout=30)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def dag_runs(self, dag_id: str) -> list[dict]:
        """Every run of `dag_id` with its type, state and times, oldest first (from the metadata DB)."""
        engine = sa.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(
                    "SELECT run_id, run_type, state, logical_date, run_after, queued_at, start_date, end_date "
                    "FROM dag_run WHERE dag_id = :d ORDER BY id"), {"d": dag_id}).mappings().all()
        finally:
            engine.dispose()
        return [dict(r) for r in rows]

    def task_stats(self, dag_id: str, run_id: str) -> tuple[int, float]:
        """How many task instances of a run ran, and their summed duration (process start included)."""
        engine = sa.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                count, busy = conn.execute(sa.text(
                    "SELECT count(*), coalesce(sum(extract(epoch FROM end_date - start_date)), 0) FROM task_instance "
                    "WHERE dag_id = :d AND run_id = :r AND start_date IS NOT NULL AND end_date IS NOT NULL"),
                    {"d": dag_id, "r": run_id}).one()
        finally:
            engine.dispose()
        return int(count), float(busy)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
