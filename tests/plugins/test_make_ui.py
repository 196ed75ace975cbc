"""`make ui` (monitors.cli.ui) on a checkout whose demo has run: it prints one line with the URL and a
generated password, a browser logs in with it and finds the demo's deployment and runs under
Browse > Privacy audits, anonymous API calls get 401, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from monitors.config import load_config
from monitors.ledger.database import _engine_for, migrate
from tests.conftest import REPO
from tests.helpers import write_config
from tests.plugins.seed import seed
from tests.receivers import free_port

pytestmark = pytest.mark.integration
DEP = "support-search"


@pytest.fixture
def demo_checkout(tmp_path):
    """A checkout as `make demo` leaves it: dags, plugins, embwarden.yaml and the demo's SQLite ledger
    (its runs seeded directly: the demo itself takes minutes)."""
    for folder in ("dags", "plugins"):
        (tmp_path / folder).symlink_to(REPO / folder)
    config = write_config(tmp_path / "embwarden.yaml", source_url=f"sqlite:///{tmp_path}/production.db",
                          artifacts=tmp_path / ".embwarden" / "artifacts")
    ledger = tmp_path / ".embwarden" / "demo" / "ledger.db"
    ledger.parent.mkdir(parents=True)
    migrate(f"sqlite:///{ledger}")
    runs = seed(f"sqlite:///{ledger}", load_config(config), runs=4, report_dir=tmp_path / ".embwarden" / "artifacts")
    _engine_for.cache_clear()
    return tmp_path, runs


def test_make_ui_prints_a_login_that_shows_the_demo_and_stops_everything(demo_checkout):
    from playwright.sync_api import expect, sync_playwright

    root, runs = demo_checkout
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "monitors.cli.ui", "--root", str(root), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ui: "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(300), "".join(lines)[-3000:]
        found = re.fullmatch(rf"ui: (http://127\.0\.0\.1:{port}/) user=admin password=(\S+)\n", lines[-1])
        assert found, lines[-1]
        base, password = found[1].rstrip("/"), found[2]
        assert (root / ".airflow" / "ui-admin-password").stat().st_mode & 0o077 == 0   # owner-only
        assert httpx.get(f"{base}/embwarden/api/deployments").status_code == 401
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.set_default_timeout(30_000)
                page.goto(f"{base}/embwarden/")
                page.wait_for_url("**/auth/login**")              # Airflow's own login page
                page.locator("input[name=username]").fill("admin")
                page.locator("input[name=password]").fill(password)
                page.locator("button[type=submit]").click()
                page.wait_for_url(f"{base}/embwarden/")
                page.goto(f"{base}/plugin/embwarden")               # Browse > Privacy audits, inside Airflow's UI
                frame = page.frame_locator("iframe").first
                expect(frame.locator("#deployments")).to_contain_text(DEP)
                page.goto(f"{base}/embwarden/deployments/{DEP}")
                for run_id in runs:
                    expect(page.locator("body")).to_contain_text(f"#{run_id}")
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:   # fail, but leave no Airflow running behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, "".join(lines)[-3000:]
    deadline = time.monotonic() + 30        # every process it started (and theirs) has ended
    while (left := subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()):
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.5)
