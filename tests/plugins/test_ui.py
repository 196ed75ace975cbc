"""The embwarden plugin in a real `airflow api-server` (SimpleAuthManager, PostgreSQL metadata and ledger):
authentication and authorisation of every route, writes recorded in the ledger, and the pages in Chromium."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import REPO
from tests.helpers import write_config
from tests.plugins.seed import seed
from tests.schema_fuzz import no_server_errors

pytestmark = pytest.mark.integration
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DEP = "support-search"
SERVICE_TOKEN = "svc-" + uuid.uuid4().hex
API_ROUTES = [("GET", "/embwarden/api/deployments"), ("GET", f"/embwarden/api/runs?deployment={DEP}"),
              ("GET", f"/embwarden/api/scores?deployment={DEP}"),
              ("GET", f"/embwarden/api/thresholds?deployment={DEP}"),
              ("POST", f"/embwarden/api/thresholds/{DEP}"), ("GET", f"/embwarden/api/gates/{DEP}"),
              ("POST", f"/embwarden/api/gates/{DEP}")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _create_db(admin: sa.Engine, name: str, base: sa.URL) -> str:
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def server(pg_admin_url, tmp_path_factory):
    """An Airflow API server with the plugin, on fresh metadata and ledger databases; yields its details."""
    from monitors.config import load_config
    from monitors.ledger.database import _engine_for, migrate

    tmp = tmp_path_factory.mktemp("ui")
    stem = f"embwarden_ui_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    metadata_url = _create_db(admin, stem + "_af", pg_admin_url)
    ledger_url = _create_db(admin, stem + "_ledger", pg_admin_url)
    migrate(ledger_url)
    config_path = write_config(tmp / "embwarden.yaml", source_url=ledger_url, artifacts=tmp / "artifacts")
    run_ids = seed(ledger_url, load_config(config_path), report_dir=tmp / "artifacts")
    outside = tmp / "outside.html"          # a report path outside the artifacts root is never served
    outside.write_text("<p>secret</p>")
    with sa.create_engine(ledger_url).begin() as conn:
        conn.execute(sa.text("UPDATE audit_runs SET report_path = :p WHERE id = :i"),
                     {"p": str(outside), "i": run_ids[0]})

    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({"admin": "admin", "viewer": "viewer"}))
    port = _free_port()
    env = {**os.environ,
           "AIRFLOW_HOME": str(tmp / "airflow"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                          "SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
           "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "EMBWARDEN_DB_URL": ledger_url,
           "EMBWARDEN_CONFIG": str(config_path),
           "EMBWARDEN_GATE_TOKEN": SERVICE_TOKEN}
    env.pop("AIRFLOW_CONN_EMBWARDEN_DB", None)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = (tmp / "api-server.log").open("w")
    proc = subprocess.Popen([AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp / "api-server.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "the API server did not answer /api/v2/version"
            try:
                if httpx.get(base + "/api/v2/version", timeout=2).status_code in (200, 401, 403):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        tokens = {}
        for user in ("admin", "viewer"):
            r = httpx.post(base + "/auth/token", json={"username": user, "password": user}, timeout=10)
            assert r.status_code == 201, r.text
            tokens[user] = r.json()["access_token"]
        yield {"base": base, "tokens": tokens, "ledger": ledger_url, "runs": run_ids, "tmp": tmp,
               "log": tmp / "api-server.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        _engine_for.cache_clear()
        with admin.connect() as conn:
            for name in (stem + "_af", stem + "_ledger"):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _client(server, who: str | None = None, token: str | None = None) -> httpx.Client:
    token = token or (server["tokens"][who] if who else None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server["base"], headers=headers, timeout=20, follow_redirects=False)


def test_every_route_needs_an_airflow_user(server):
    anon = _client(server)
    for method, path in API_ROUTES:
        r = anon.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
    for path in ("/embwarden/", f"/embwarden/deployments/{DEP}", f"/embwarden/deployments/{DEP}/thresholds",
                 f"/embwarden/runs/{server['runs'][-1]}", f"/embwarden/runs/{server['runs'][-1]}/report",
                 "/embwarden/metrics",
                 "/embwarden/static/plotly.min.js"):
        r = anon.get(path)
        assert r.status_code in (302, 303, 307), (path, r.status_code)
        assert r.headers["location"].startswith("/auth/login?next="), r.headers["location"]
    assert _client(server, token="not-a-jwt").get("/embwarden/api/deployments").status_code in (401, 403)
    # OpenAPI documents the API, for Airflow users.
    assert anon.get("/embwarden/openapi.json").status_code == 401
    spec = _client(server, "viewer").get("/embwarden/openapi.json").json()
    assert {"/api/deployments", "/api/runs", "/api/scores", "/api/thresholds", "/api/thresholds/{deployment}",
            "/api/gates/{deployment}"} <= set(spec["paths"])


def test_viewer_reads_but_cannot_write(server):
    viewer = _client(server, "viewer")
    plugins = viewer.get("/api/v2/plugins").json()["plugins"]          # the nav entry Airflow's UI shows
    ours = next(p for p in plugins if p["name"] == "embwarden")
    assert ours["fastapi_apps"][0]["url_prefix"] == "/embwarden"
    assert ours["external_views"][0]["href"] == "/embwarden/"
    deployments = viewer.get("/embwarden/api/deployments").json()
    assert [d["name"] for d in deployments] == [DEP]
    assert deployments[0]["worst"]["metric"] == "bow_inversion.token_f1"
    assert deployments[0]["worst"]["level"] == "gate"
    assert len(viewer.get(f"/embwarden/api/runs?deployment={DEP}&limit=3").json()) == 3
    scores = viewer.get(f"/embwarden/api/scores?deployment={DEP}&metric=bow_inversion.token_f1").json()
    assert len(scores) == len(server["runs"]) and scores[-1]["value"] == pytest.approx(0.52)
    assert viewer.get("/embwarden/api/runs?deployment=nope").status_code == 404
    page = viewer.get("/embwarden/")
    assert page.status_code == 200 and DEP in page.text and "read-only" in page.text
    assert "Close gate" not in viewer.get(f"/embwarden/deployments/{DEP}").text
    # A push to the deployment's targets (an MLflow alias, a CD webhook) that failed shows on its page.
    from monitors.ledger.database import session_scope
    from monitors.ledger.models import Action
    from monitors.ledger.registry import get_deployment

    with session_scope(server["ledger"]) as session:
        session.add(Action(deployment_id=get_deployment(session, DEP).id, kind="sync_targets", status="failed",
                           actor="privacy_audit", reason="push rollback", error="webhook:hooks: ConnectError",
                           detail={"change": {"event": "rollback"}, "targets": {
                               "mlflow:m@champion": "done", "webhook:hooks": "ConnectError: refused"}}))
    page = viewer.get(f"/embwarden/deployments/{DEP}").text
    assert 'id="targets-out-of-sync"' in page and "webhook:hooks: ConnectError: refused" in page
    assert "embwarden targets sync support-search" in page
    with session_scope(server["ledger"]) as session:   # its retry went through
        session.add(Action(deployment_id=get_deployment(session, DEP).id, kind="sync_targets", status="done",
                           actor="embwarden", reason="retry", detail={"targets": {"webhook:hooks": "done"}}))
    page = viewer.get(f"/embwarden/deployments/{DEP}").text
    assert 'id="targets-in-sync"' in page and "targets-out-of-sync" not in page
    # The run page opens in plain words; each metric links to what it means.
    run_page = viewer.get(f"/embwarden/runs/{server['runs'][-1]}").text
    assert 'id="plain"' in run_page and "An attacker who holds these vectors" in run_page
    assert 'href="/embwarden/metrics#bow_inversion.token_f1"' in run_page
    metrics = viewer.get("/embwarden/metrics").text
    assert 'id="bow_inversion.token_f1"' in metrics and "canaries" in metrics and "not judged" in metrics
    body = {"metric": "bow_inversion.token_f1", "warn": 0.4, "gate": 0.5, "rollback": 0.6, "reason": "viewer try"}
    assert viewer.post(f"/embwarden/api/thresholds/{DEP}", json=body).status_code == 403
    assert viewer.post(f"/embwarden/api/gates/{DEP}", json={"action": "close_gate", "reason": "viewer try"}
                       ).status_code == 403


def test_admin_changes_a_threshold_and_bad_ones_are_refused_naming_the_field(server):
    admin = _client(server, "admin")
    url = f"/embwarden/api/thresholds/{DEP}"
    body = {"metric": "bow_inversion.token_f1", "warn": 0.4, "gate": 0.48, "rollback": 0.6,
            "higher_is_worse": True, "basis": "ci_low", "reason": "tighter after the March review"}
    r = admin.post(url, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["author"] == "admin" and r.json()["old"]["gate"] == 0.5
    view = admin.get(f"/embwarden/api/thresholds?deployment={DEP}").json()
    assert view["effective"]["bow_inversion.token_f1"] == {"warn": 0.4, "gate": 0.48, "rollback": 0.6,
                                                           "higher_is_worse": True, "basis": "ci_low"}
    newest = view["history"][0]
    assert (newest["author"], newest["reason"], newest["new"]["gate"]) == ("admin", body["reason"], 0.48)

    def refused(changes: dict) -> str:
        r = admin.post(url, json={**body, **changes})
        assert r.status_code == 422, r.text
        return json.dumps(r.json()["detail"])

    assert '"reason"' in refused({"reason": " "})
    assert '"warn"' in refused({"warn": 1.5})                       # outside the metric's range
    assert "levels out of order" in refused({"warn": 0.7})
    assert '"metric"' in refused({"metric": "bow_inversion.nope"})
    assert '"basis"' in refused({"basis": "median"})                # pydantic names it too
    assert '"warn"' in refused({"warn": "lots"})
    assert '"warn"' in refused({"warn": True})                      # not read as 1.0
    assert '"reason"' in refused({"reason": "nul \u0000 byte"})    # a 422 naming the field, not a 500
    nul = admin.get(f"/embwarden/api/runs?deployment={DEP}%00")
    assert nul.status_code == 422 and "NUL" in nul.text, nul.text
    # Only `warn` named: gate, rollback and basis stay as they are; a level sent as null is removed.
    r = admin.post(url, json={"metric": "bow_inversion.token_f1", "warn": 0.42, "reason": "warn a bit later"})
    assert r.status_code == 200, r.text
    assert r.json()["new"] == {"warn": 0.42, "gate": 0.48, "rollback": 0.6, "higher_is_worse": True, "basis": "ci_low"}
    r = admin.post(url, json={"metric": "bow_inversion.token_f1", "rollback": None, "reason": "no automatic rollback"})
    assert r.status_code == 200 and r.json()["new"]["rollback"] is None and r.json()["new"]["gate"] == 0.48, r.text
    # CSRF: a form post (or any non-JSON body) is refused even with a valid credential.
    form = admin.post(url, data={k: str(v) for k, v in body.items()})
    assert form.status_code == 415, form.text
    assert admin.get(f"/embwarden/api/thresholds?deployment={DEP}").json()["effective"][
        "bow_inversion.token_f1"]["gate"] == 0.48


def test_admin_closes_and_reopens_the_gate_and_the_service_token_only_reads(server):
    admin = _client(server, "admin")
    url = f"/embwarden/api/gates/{DEP}"
    r = admin.post(url, json={"action": "close_gate", "reason": "leak found by hand"})
    assert r.status_code == 200, r.text
    assert r.json()["gate"]["state"] == "closed"
    service = _client(server, token=SERVICE_TOKEN)
    gate = service.get(url)
    assert gate.status_code == 200 and gate.json()["state"] == "closed" and gate.json()["actor"] == "admin"
    assert service.post(url, json={"action": "reopen_gate", "reason": "service try"}).status_code == 403
    assert service.get("/embwarden/api/deployments").status_code in (401, 403)     # the token reads gates only
    assert admin.post(url, json={"action": "reopen_gate", "reason": "ok"}).status_code == 422   # reason too short
    assert admin.post(url, json={"action": "activate", "reason": "to a ghost", "version": "v9"}).status_code == 422
    assert admin.post(url, json={"action": "reopen_gate", "reason": "fixed upstream"}).status_code == 200
    with sa.create_engine(server["ledger"]).connect() as conn:
        events = conn.execute(sa.text("SELECT state, actor, reason FROM gate_events ORDER BY id DESC LIMIT 2")).all()
        actions = conn.execute(sa.text("SELECT kind, status, actor FROM actions ORDER BY id DESC LIMIT 2")).all()
    assert [tuple(e) for e in events] == [("open", "admin", "fixed upstream"),
                                          ("closed", "admin", "leak found by hand")]
    assert [tuple(a) for a in actions] == [("reopen_gate", "done", "admin"), ("close_gate", "done", "admin")]
    # No rollback offered when no other version has passed: the active one is the only one that did.
    with sa.create_engine(server["ledger"]).connect() as conn:
        active = conn.execute(sa.text("SELECT v.name FROM deployments d JOIN versions v "
                                      "ON v.id = d.active_version_id")).scalar()
    page = admin.get(f"/embwarden/deployments/{DEP}").text
    assert active == "v1" and 'id="no-rollback"' in page and 'id="rollback"' not in page


def test_reports_are_served_only_from_the_artifacts_root(server):
    viewer = _client(server, "viewer")
    ok = viewer.get(f"/embwarden/runs/{server['runs'][-1]}/report")
    assert ok.status_code == 200 and "embwarden audit report" in ok.text
    assert viewer.get(f"/embwarden/runs/{server['runs'][0]}/report").status_code == 404
    assert viewer.get("/embwarden/static/plotly.min.js").status_code == 200


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 15_000, (path, len(data))


def test_pages_in_a_browser(server):
    from playwright.sync_api import expect, sync_playwright

    base, shots = server["base"], server["tmp"] / "shots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(base + "/embwarden/")
            page.wait_for_url("**/auth/login**")            # sent to Airflow's login page
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill("admin")
            page.locator("button[type=submit]").click()
            page.wait_for_url(base + "/embwarden/")
            expect(page.locator("#deployments")).to_contain_text(DEP)
            page.screenshot(path=shots / "overview.png", full_page=True)

            page.click(f"text={DEP}")
            page.wait_for_url(f"**/embwarden/deployments/{DEP}")
            expect(page.locator(".chart .main-svg").first).to_be_visible()     # plotly drew the charts
            page.screenshot(path=shots / "deployment.png", full_page=True)

            page.once("dialog", lambda d: d.accept("closing from the browser"))
            page.click("#close-gate")
            expect(page.locator("#reopen-gate")).to_be_visible()
            expect(page.locator("#gate-events")).to_contain_text("closing from the browser")
            page.once("dialog", lambda d: d.accept("reopening from the browser"))
            page.click("#reopen-gate")
            expect(page.locator("#close-gate")).to_be_visible()
            expect(page.locator("#actions")).to_contain_text("reopening from the browser")

            page.goto(f"{base}/embwarden/deployments/{DEP}/thresholds")
            form = page.locator("#threshold-form")
            form.locator("input[name=metric]").fill("bow_inversion.token_recall")
            form.locator("input[name=metric]").dispatch_event("change")
            form.locator("input[name=warn]").fill("0.42")
            form.locator("input[name=gate]").fill("0.5")
            form.locator("input[name=rollback]").fill("0.6")
            form.locator("input[name=reason]").fill("recall threshold set from the UI")
            page.click("#save-threshold")
            expect(page.locator("#history")).to_contain_text("recall threshold set from the UI")
            expect(page.locator("#effective")).to_contain_text("bow_inversion.token_recall")
            form = page.locator("#threshold-form")
            form.locator("input[name=warn]").fill("0.9")               # out of order: refused, said why
            form.locator("input[name=reason]").fill("bad one")
            page.click("#save-threshold")
            expect(page.locator("#msg")).to_contain_text("levels out of order")
            page.screenshot(path=shots / "thresholds.png", full_page=True)

            page.goto(f"{base}/plugin/embwarden")                 # the nav entry: the page inside Airflow's UI
            expect(page.frame_locator("iframe").first.locator("#deployments")).to_contain_text(DEP)
            page.screenshot(path=shots / "in_airflow.png")

            page.goto(f"{base}/embwarden/runs/{server['runs'][-1]}")
            expect(page.locator("#scores")).to_contain_text("bow_inversion.token_f1")
            expect(page.frame_locator("iframe").locator("#verdict")).to_have_text("gate")
            page.screenshot(path=shots / "run.png", full_page=True)
        finally:
            browser.close()
    for name in ("overview", "deployment", "thresholds", "run"):
        _png_ok(shots / f"{name}.png")
    with sa.create_engine(server["ledger"]).connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind, actor FROM actions ORDER BY id DESC LIMIT 2")).all()
        author = conn.execute(sa.text("SELECT author FROM thresholds WHERE metric = 'bow_inversion.token_recall' "
                                      "ORDER BY version DESC LIMIT 1")).scalar()
    assert [tuple(k) for k in kinds] == [("reopen_gate", "admin"), ("close_gate", "admin")]
    assert author == "admin"


def test_the_api_answers_any_request_without_a_server_error(server):
    """Schemathesis over the plugin's OpenAPI document, as an admin (writes included), valid and invalid
    requests, bounded: no 5xx, no traceback. Last in the module: it changes gates and thresholds."""
    admin = _client(server, "admin")
    document = admin.get("/embwarden/openapi.json").json()
    seen = no_server_errors(document, f"{server['base']}/embwarden", headers=dict(admin.headers), examples=25)
    assert {status for counts in seen.values() for status in counts} & {200, 422}, seen
    assert "Traceback" not in server["log"].read_text()


def test_the_overview_flags_strong_leakage_that_no_threshold_judges():
    """A pass beside an unjudged candidate_inversion.top1 of 1.0 is not shown as a quiet pass."""
    from types import SimpleNamespace

    from monitors.web.queries import _judge, worst

    def score(key, value):
        probe, metric = key.split(".")
        return SimpleNamespace(probe=probe, metric=metric, value=value, ci_low=value, ci_high=value)

    gated = {"warn": 0.5, "gate": 0.55, "rollback": 0.6, "higher_is_worse": True, "basis": "value"}
    passing = _judge(score("bow_inversion.token_f1", 0.46), gated)
    strong = _judge(score("candidate_inversion.top1", 1.0), None)
    weak = _judge(score("candidate_inversion.top1", 0.03), None)
    assert (strong["level"], strong["strong"]) == ("not judged", True) and weak["strong"] is False
    assert worst([passing, strong])["metric"] == "candidate_inversion.top1"
    assert worst([passing, weak])["metric"] == "bow_inversion.token_f1"
    warned = _judge(score("bow_inversion.token_f1", 0.52), gated)
    assert worst([warned, strong])["metric"] == "bow_inversion.token_f1"   # a crossed level still comes first
