"""The plugin's pages, server side: 3 deployments x 365 runs x 10 metrics in a SQLite ledger, rendered
in-process with FastAPI's TestClient (Airflow's user dependencies overridden), median of 10."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml


def ui_figures() -> dict[str, float]:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from monitors.config import load_config
    from monitors.ledger.database import _engine_for, migrate
    from monitors.web import auth
    from monitors.web.app import app
    from tests.helpers import write_config
    from tests.plugins.seed import METRICS, seed

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = write_config(tmp / "embwarden.yaml", source_url=f"sqlite:///{tmp}/source.db")
        data = yaml.safe_load(path.read_text())
        one = data["deployments"].pop("support-search")
        data["deployments"] = {f"search-{i}": one for i in range(3)}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        url = f"sqlite:///{tmp}/ledger.db"
        saved = {k: os.environ.get(k) for k in ("EMBWARDEN_DB_URL", "EMBWARDEN_CONFIG", "AIRFLOW_CONN_EMBWARDEN_DB")}
        os.environ.update(EMBWARDEN_DB_URL=url, EMBWARDEN_CONFIG=str(path))
        os.environ.pop("AIRFLOW_CONN_EMBWARDEN_DB", None)
        try:
            migrate(url)
            seed(url, load_config(path), runs=365, metrics=METRICS)
            user = SimpleAuthManagerUser(username="bench", role="viewer")
            app.dependency_overrides.update({auth.api_user: lambda: user, auth.page_user: lambda: user})
            client = TestClient(app)

            def median_ms(path: str) -> float:
                assert client.get(path).status_code == 200, path          # warm up
                times = []
                for _ in range(10):
                    started = time.perf_counter()
                    response = client.get(path)
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, path
                return round(statistics.median(times) * 1000, 1)

            figures = {"ui_overview_ms": median_ms("/"), "ui_deployment_ms": median_ms("/deployments/search-1")}
        finally:
            app.dependency_overrides.clear()
            _engine_for.cache_clear()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return figures
