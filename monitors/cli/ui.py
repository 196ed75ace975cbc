"""`make ui`: the Airflow UI on the demo's Airflow home, with embwarden's plugin and a login.

Runs the demo first when it has not run (its ledger is the data to look at), then starts Airflow's
api-server, scheduler, dag-processor and triggerer on loopback with the SimpleAuthManager: one
user, `admin`, whose password is generated once and kept (owner-only) in the Airflow home. Prints

    ui: http://127.0.0.1:8080/ user=admin password=...

and stays in the foreground until Ctrl-C (or SIGTERM), then stops everything it started. The
port comes from `--port` or `UI_PORT` (default 8080). Processes log to `.airflow/ui-logs/`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = {"api-server": ["api-server", "-H", "127.0.0.1", "-p", "{port}", "-w", "1"],
             "scheduler": ["scheduler"], "dag-processor": ["dag-processor"], "triggerer": ["triggerer"]}
START_TIMEOUT_S = 180


def kept_secret(path: Path) -> str:
    """A random secret made the first time and read back afterwards; the file is owner-only."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(12))
    return path.read_text().strip()


def environment(root: Path, port: int) -> tuple[dict[str, str], str]:
    """The demo's Airflow environment plus the auth manager's settings; and the admin's password."""
    from monitors.cli import demo

    home = root / ".airflow"
    password = kept_secret(home / "ui-admin-password")
    passwords = home / "ui-passwords.json"   # SimpleAuthManager's file: {"user": "password"}
    passwords.write_text(json.dumps({"admin": password}))
    passwords.chmod(0o600)
    env = {**os.environ, **demo.environment(root, root / ".embwarden" / "demo" / "ledger.db"),
           "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                          "SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__API_AUTH__JWT_SECRET": kept_secret(home / "ui-jwt-secret"),
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    env.pop("EMBWARDEN_DB_URL", None)   # the demo's ledger, through its Airflow connection
    return env, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("UI_PORT") or 8080))
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose demo to show")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / ".embwarden" / "demo" / "ledger.db").is_file():
        print("ui: no demo data yet: running the demo first (a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "monitors.cli.demo"], cwd=root, check=True)
    env, password = environment(root, args.port)
    airflow = str(Path(sys.executable).with_name("airflow"))
    logs = root / ".airflow" / "ui-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "db-migrate.log").open("w") as log:
        subprocess.run([airflow, "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    started: dict[str, subprocess.Popen] = {}
    # Both, explicitly: a process started in the background inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        for name, command in PROCESSES.items():
            log = (logs / f"{name}.log").open("w")
            started[name] = subprocess.Popen([airflow, *(part.format(port=args.port) for part in command)],
                                             env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        base = f"http://127.0.0.1:{args.port}"
        wait_for(base, started, logs)
        print(f"ui: {base}/ user=admin password={password}", flush=True)
        while True:
            for name, proc in started.items():
                if proc.poll() is not None:
                    print(f"ui: airflow {name} stopped (exit {proc.returncode}); see {logs / (name + '.log')}",
                          file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        stop(started)


def _interrupted(*_) -> None:
    raise KeyboardInterrupt


def wait_for(base: str, started: dict[str, subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{base}/api/v2/version", timeout=2).status_code in (200, 401, 403):
                return
        except httpx.HTTPError:
            pass
        server = started["api-server"]
        if server.poll() is not None or time.monotonic() > deadline:
            tail = (logs / "api-server.log").read_text()[-3000:]
            raise SystemExit(f"ui: the Airflow API server did not start on {base}:\n{tail}")
        time.sleep(0.5)


def stop(started: dict[str, subprocess.Popen]) -> None:
    """Everything this started, politely first."""
    for proc in started.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in started.values():
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
