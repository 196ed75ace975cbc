"""A real MLflow tracking server with its Model Registry on loopback for the tests: `mlflow server` from
a virtualenv of its own (scripts/ensure-mlflow.sh makes it; embwarden's .venv never imports mlflow),
on a free port, with a sqlite backend store and its artifacts in a temporary folder. No mock of MLflow.

    from tests.mlflow_server import mlflow_server  # noqa: F401   (in a test module)
    url = mlflow_server.url                                  # http://127.0.0.1:PORT
    os.environ["AIRFLOW_CONN_EMBWARDEN_MLFLOW"] = mlflow_server.connection()
    versions = register_model(url, "support-search", 3)      # ["1", "2", "3"]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.receivers import free_port

REPO = Path(__file__).resolve().parents[1]
CONNECTION = "embwarden_mlflow"
API = "/api/2.0/mlflow"


def mlflow_venv() -> Path:
    return REPO / os.environ.get("EMBWARDEN_MLFLOW_VENV", ".venv-mlflow")


def ensure_mlflow() -> Path:
    """The `mlflow` executable, after scripts/ensure-mlflow.sh installed it if needed (a minute the first time)."""
    done = subprocess.run([str(REPO / "scripts" / "ensure-mlflow.sh")], capture_output=True, text=True)
    if done.stdout.strip():
        print(done.stdout.strip())
    if done.returncode != 0:
        pytest.fail(f"scripts/ensure-mlflow.sh failed ({done.returncode}):\n{done.stdout}{done.stderr}"[-4000:],
                    pytrace=False)
    return mlflow_venv() / "bin" / "mlflow"


@dataclass
class MlflowServer:
    url: str
    port: int
    folder: Path
    proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, folder: Path, timeout: float = 90) -> MlflowServer:
        mlflow = ensure_mlflow()
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        args = [str(mlflow), "server",
                "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                "--default-artifact-root", str(folder / "artifacts"),
                # The registry only: no artifact proxy (it would write ./mlartifacts), no uvicorn pool.
                "--no-serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        # The server's own environment, not this venv's; no huey job runner (7 processes and a folder
        # in /dev/shm for GenAI evaluation jobs), no telemetry sent out.
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("MLFLOW_")}
        env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
        log = (folder / "mlflow.log").open("w")
        server = cls(f"http://127.0.0.1:{port}", port, folder,
                     subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env,
                                      start_new_session=True))
        deadline = time.monotonic() + timeout
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {server.proc.returncode}:\n{server.log_tail()}")
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    return server
                problem = "GET /health did not answer 200"
            except httpx.HTTPError as exc:
                problem = str(exc)
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"mlflow server not ready after {timeout:.0f} s ({problem}):\n{server.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.folder / "mlflow.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def connection(self) -> str:
        """The Airflow connection (AIRFLOW_CONN_<ID>, JSON) of an `http` connection to this server."""
        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http"})

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to the server's process group (the CLI, uvicorn and its worker), SIGKILL after `grace` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:                                     # whatever of the group outlived the CLI process
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _post(url: str, path: str, body: dict) -> dict:
    answer = httpx.post(f"{url}{API}/{path}", json=body, timeout=30)
    if answer.status_code != 200:
        raise RuntimeError(f"POST {API}/{path} answered {answer.status_code}: {answer.text}")
    return answer.json()


def register_model(url: str, name: str, n_versions: int) -> list[str]:
    """A registered model `name` with `n_versions` versions, as a training job would leave it: one run
    (in the Default experiment) whose artifact folder holds the model, each version's source a folder
    of it. Returns the version numbers, as strings ("1", "2", ...).

    MLflow refuses a bare local path as a version's source unless `run_id` names a run whose artifact
    folder contains it (INVALID_PARAMETER_VALUE otherwise), hence the run.
    """
    _post(url, "registered-models/create", {"name": name})
    run = _post(url, "runs/create", {"experiment_id": "0", "run_name": f"train {name}"})["run"]["info"]
    return [_post(url, "model-versions/create",
                  {"name": name, "source": f"{run['artifact_uri']}/model-{i}", "run_id": run["run_id"]}
                  )["model_version"]["version"]
            for i in range(1, n_versions + 1)]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One MLflow server for the session; each test registers models of its own (unique names)."""
    server = MlflowServer.start(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()
