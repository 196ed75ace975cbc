"""The per-run report: trend charts against thresholds, validation and drift, opened in a real Chromium."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitors.ledger.database import engine, session_scope
from monitors.ledger.models import Action, AlertRecord, AuditRun, Deployment, GateEvent, Score, Validation, Version
from monitors.reports import audit_report, charts

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DAY0 = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)

# probe.metric -> (start, slope per run, thresholds or None); 10 metrics, 3 of them drift.
METRICS = {
    "bow_inversion.token_f1": (0.33, 0.006, {"warn": 0.45, "gate": 0.5, "rollback": 0.55}),
    "bow_inversion.token_precision": (0.80, 0.002, None),
    "bow_inversion.token_recall": (0.25, 0.005, None),
    "candidate_inversion.top1": (0.08, 0.001, {"warn": 0.3, "gate": 0.5, "rollback": 0.8, "basis": "ci_low"}),
    "candidate_inversion.top5": (0.20, 0.002, None),
    "candidate_inversion.exposure_bits": (1.5, 0.01, {"warn": 3.0, "gate": 4.0, "rollback": None}),
    "attribute_inference.accuracy": (0.55, 0.0, {"warn": 0.7, "gate": 0.8, "rollback": 0.9, "basis": "ci_high"}),
    "drift.model_auc": (0.52, 0.001, {"warn": 0.7, "gate": None, "rollback": None}),
    "drift.mmd": (0.01, 0.0002, None),
    "drift.norm_ks": (0.05, 0.001, None),
}
SUCCEEDED_BEFORE = 35        # succeeded runs before the final one: the chart shows the last 29 of them


def _thresholds() -> dict:
    return {m: {"warn": None, "gate": None, "rollback": None, "higher_is_worse": True, "basis": "value", **t}
            for m, (_, _, t) in METRICS.items() if t}


def _scores(step: int, wobble: float) -> list[Score]:
    out = []
    for key, (start, slope, _) in METRICS.items():
        probe, metric = key.split(".")
        value = start + slope * step + wobble * (0.02 if start < 1 else 0.1)
        half = 0.04 if start < 1 else 0.3
        target = "canaries" if probe == "candidate_inversion" else "sample"
        out.append(Score(task=f"probe_{probe}", probe=probe, metric=metric, value=value, ci_low=value - half,
                         ci_high=value + half, n=120, target=target))
    return out


def _run(session, dep, version, i: int, status: str = "succeeded", verdict: str | None = "pass", **extra) -> AuditRun:
    finished = DAY0 + timedelta(days=i)
    run = AuditRun(dag_id="privacy_audit", run_id=f"scheduled__{finished:%Y-%m-%d}", deployment_id=dep.id,
                   version_id=version.id, status=status, verdict=verdict, sample_size=120,
                   thresholds=_thresholds() if status == "succeeded" else None,
                   started_at=finished - timedelta(minutes=4), finished_at=finished, **extra)
    if status == "succeeded":
        run.scores = _scores(i, wobble=(-1) ** i)
    session.add(run)
    session.flush()
    return run


def _history(session) -> AuditRun:
    """About 30 runs of support-search (with invalid and failed ones between), noise elsewhere, then the final run."""
    dep = Deployment(name="support-search")
    other = Deployment(name="other-search")
    session.add_all([dep, other])
    session.flush()
    v1, v2 = (Version(deployment_id=dep.id, name=n, encoder={}, transform={}) for n in ("v1", "v2"))
    ov = Version(deployment_id=other.id, name="v1", encoder={}, transform={})
    session.add_all([v1, v2, ov])
    session.flush()
    dep.active_version = v1
    day = 0
    for i in range(SUCCEEDED_BEFORE):
        _run(session, dep, v1, day)
        day += 1
        if i % 10 == 3:
            _run(session, dep, v1, day, status="invalid", verdict="invalid", error="row id=7: NaN")
            day += 1
        if i == 20:
            _run(session, dep, v1, day, status="failed", verdict=None, error="source unreachable")
            day += 1
    for i in range(5):                         # another deployment's runs never show in this one's charts
        _run(session, other, ov, i)
    final = _run(session, dep, v2, day, verdict="gate", error=None)
    f1 = next(s for s in final.scores if s.metric == "token_f1")
    f1.value, f1.ci_low, f1.ci_high = 0.52, 0.48, 0.56
    final.trends = {"bow_inversion.token_f1": {"tau": 0.62, "p": 0.0004, "values": [0.4 + i / 100 for i in range(12)],
                                               "level": "warn"}}
    session.add(Validation(audit_run_id=final.id, kind="sample", success=False, row_count=120, results=[
        {"expectation": "expect_table_row_count_to_be_between", "column": None, "success": True, "observed": 120,
         "unexpected_count": 0, "unexpected_ids": []},
        {"expectation": "expect_column_values_to_not_be_null", "column": "embedding", "success": False,
         "observed": 2, "unexpected_count": 2, "unexpected_ids": [4242, 5757]},
        {"expectation": "expect_column_values_to_be_unique", "column": "id", "success": True, "observed": 0,
         "unexpected_count": 0, "unexpected_ids": []},
    ]))
    session.add(Action(deployment_id=dep.id, audit_run_id=final.id, kind="close_gate", status="done", actor="test",
                       reason="bow_inversion.token_f1 crossed gate", detail={}))
    session.add(AlertRecord(deployment_id=dep.id, audit_run_id=final.id, kind="opened", channel="log", status="sent",
                            attempts=1, payload={}))
    session.add(GateEvent(deployment_id=dep.id, state="closed", reason="bow_inversion.token_f1 = 0.520 crossed gate",
                          actor="embwarden", audit_run_id=final.id))
    _run(session, dep, v1, day + 1)             # a later run (a re-audit) is not part of this run's report
    session.flush()
    return final


@pytest.fixture
def written(ledger, tmp_path):
    """The final run's report written into its folder next to evidently's drift.html; also the statements run."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "drift.html").write_text("<html><body>evidently</body></html>")
    statements: list[str] = []

    def listen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    with session_scope() as session:
        final = _history(session)
        session.commit()
        session.expire_all()
        run = session.get(AuditRun, final.id)
        sa.event.listen(engine(), "before_cursor_execute", listen)
        try:
            content = audit_report.build(session, run)
        finally:
            sa.event.remove(engine(), "before_cursor_execute", listen)
        html_path = audit_report.write(folder, content)
        run_id = run.id
    return {"html": html_path, "json": folder / "report.json", "run_id": run_id, "statements": statements}


def test_report_json_has_the_30_run_series_per_metric_with_this_run_last(written):
    data = json.loads(written["json"].read_text())
    assert list(data["trends"]) == list(METRICS)
    for metric, series in data["trends"].items():
        assert len(series) == 30, metric
        assert series[-1]["audit_run_id"] == written["run_id"] and series[-1]["version"] == "v2"
        assert [p["finished_at"] for p in series] == sorted(p["finished_at"] for p in series)
        assert set(series[0]) == {"audit_run_id", "finished_at", "value", "ci_low", "ci_high", "version"}
    f1 = data["trends"]["bow_inversion.token_f1"]
    assert f1[-1]["value"] == 0.52 and all(p["ci_low"] <= p["value"] <= p["ci_high"] for p in f1)
    ids = [p["audit_run_id"] for p in f1]
    with session_scope() as session:                 # only succeeded runs of this deployment, up to this run
        runs = {r.id: r for r in session.scalars(sa.select(AuditRun).where(AuditRun.id.in_(ids)))}
        assert {(r.status, r.deployment.name) for r in runs.values()} == {("succeeded", "support-search")}
        later = session.scalar(sa.select(sa.func.max(AuditRun.id)))
    assert later > written["run_id"] and later not in ids
    assert data["thresholds"]["candidate_inversion.top1"]["basis"] == "ci_low"
    assert data["rising"] == [{"metric": "bow_inversion.token_f1", "runs": 12, "tau": 0.62, "p": 0.0004,
                               "level": "warn"}]
    assert data["validations"][0]["results"][1]["unexpected_ids"] == [4242, 5757]
    assert data["drift"] == {"metrics": ["drift.model_auc", "drift.mmd", "drift.norm_ks"], "report": "drift.html"}
    history = [s for s in written["statements"] if re.search(r"\bFROM scores\b", s)]
    assert len(history) == 2, history              # this run's own scores, then one query for the whole history


def test_report_html_draws_a_chart_per_metric_with_levels_validation_and_drift(written):
    html = written["html"].read_text()
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert len(svgs) == len(METRICS)
    for svg, metric in zip(svgs, METRICS, strict=True):
        root = ET.fromstring(svg)                    # well-formed XML
        assert root.get("width") == "600" and root.get("height") == "160"
        assert f'font-weight="600">{metric}</tspan>' in svg and "<polygon" in svg and "<polyline" in svg
        assert svg.count('class="current"') == 1    # this run, ringed
        assert "2026-09-" in svg                     # first and last run dates
    f1 = svgs[0]
    for level, colour in charts.LEVEL_COLOURS.items():
        assert f'stroke="{colour}" stroke-width="1.3" stroke-dasharray="5 4" class="level {level}"' in f1
    assert "class=\"level" not in svgs[2]            # token_recall has no thresholds: no lines
    assert "levels judge ci_low" in svgs[3]
    assert "rising over the last 12 runs" in html and "Kendall tau 0.62, p &lt; 0.001" in html
    # the score table has the basis column
    assert "<th>basis</th>" in html and "<td>ci_high</td>" in html
    # validation: the failed expectation, its column, failed rows and example ids
    validation = html[html.index('id="validation"'):html.index('id="drift"')]
    row = re.search(r"<tr><td>expect_column_values_to_not_be_null</td>.*?</tr>", validation, flags=re.S).group(0)
    assert "<td>embedding</td>" in row and 'class="bad">failed' in row and "4242, 5757" in row
    assert "Not validated" not in html
    # drift: its section and the relative link to evidently's report
    drift = html[html.index('id="drift"'):]
    assert "drift.model_auc" in drift and '<a href="drift.html">evidently\'s report</a>' in drift
    # section order
    order = [html.index(f'id="{s}"') for s in ("verdict", "actions", "scores", "trends", "validation", "drift")]
    assert order == sorted(order)
    # self-contained and small enough to mail
    assert "<script" not in html and "url(" not in html and "@import" not in html and "<link" not in html
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", html)
    size = written["html"].stat().st_size
    assert size < 300_000, size


def test_a_run_without_scores_history_or_validation_says_so(ledger, tmp_path):
    with session_scope() as session:
        dep = Deployment(name="support-search")
        session.add(dep)
        session.flush()
        version = Version(deployment_id=dep.id, name="v1", encoder={}, transform={})
        session.add(version)
        session.flush()
        run = _run(session, dep, version, 0, status="failed", verdict=None, error="source unreachable")
        content = audit_report.build(session, run)
    html = audit_report.write(tmp_path, content).read_text()
    assert content["trends"] == {} and content["validations"] == [] and content["drift"]["report"] is None
    assert "Not validated" in html and "<svg" not in html and 'id="drift"' not in html
    assert "The audit stopped" in html and "No scores were recorded" in html
    assert "states no formal privacy guarantee" in html and 'id="composition"' not in html


def test_chart_escapes_text_and_draws_single_and_flat_series():
    point = {"audit_run_id": 1, "finished_at": "2026-09-01T06:00:00+00:00", "value": 0.5, "ci_low": 0.5,
             "ci_high": 0.5, "version": "v<1>"}
    svg = charts.line_chart([point], title='a<b>&"c"', levels={"warn": 0.5, "gate": None}, highlight=1)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and "a&lt;b&gt;&amp;&quot;c&quot;" in svg and "v&lt;1&gt;" in svg
    assert 'class="level warn"' in svg and 'class="current"' in svg
    empty = charts.line_chart([], title="m")
    assert "no finished run" in ET.tostring(ET.fromstring(empty), encoding="unicode")
    nan = charts.line_chart([{**point, "value": float("nan")}, {**point, "audit_run_id": 2}], title="m")
    assert "nan" not in nan.lower().replace("finished", "")


def test_report_renders_in_headless_chromium(written, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
                    ".ci/run installs it before `make test`", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'", pytrace=False)
    url = written["html"].resolve().as_uri()
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            verdict = page.locator("#verdict")
            assert verdict.is_visible() and verdict.inner_text().strip() == "gate"
            assert verdict.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(198, 40, 40)"
            svgs = page.locator("svg.chart")
            assert svgs.count() == len(METRICS)
            for i in range(svgs.count()):
                box = svgs.nth(i).bounding_box()
                assert box and box["width"] >= 300 and box["height"] >= 80, box
            assert page.locator("line.level").count() >= 3
            assert page.get_by_role("link", name="evidently's report").get_attribute("href") == "drift.html"
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert requests == [url]                         # nothing else was fetched: the report is self-contained
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, len(png)
    print(f"screenshot: {shot}")


def test_the_guarantee_its_composition_and_the_dp_audit_against_the_claim(ledger, tmp_path):
    from audits.transforms import ClipGaussian, describe_guarantee

    claim = ClipGaussian(2.0, 1e-5)
    with session_scope() as session:
        dep = Deployment(name="support-search")
        session.add(dep)
        session.flush()
        version = Version(deployment_id=dep.id, name="v3-dp", encoder={},
                          transform={"kind": "clip_gaussian", "epsilon": 2.0, "delta": 1e-5, "clip_norm": 1.0},
                          guarantee=describe_guarantee(claim))
        session.add(version)
        session.flush()
        run = AuditRun(dag_id="privacy_audit", run_id="manual__1", deployment_id=dep.id, version_id=version.id,
                       status="succeeded", verdict="gate", sample_size=120, thresholds={},
                       started_at=DAY0, finished_at=DAY0)
        run.scores = [Score(task="probe_dp_audit", probe="dp_audit", metric="empirical_epsilon", value=9.1,
                            ci_low=8.7, ci_high=9.5, n=150_000, target="sample")]
        session.add(run)
        session.flush()
        content = audit_report.build(session, run)
    html = audit_report.write(tmp_path, content).read_text()
    privacy = content["privacy"]
    assert privacy["claimed_epsilon"] == 2.0
    assert [c["queries"] for c in privacy["composition"]] == [1, 2, 4, 8, 16, 32, 64]
    assert privacy["composition"][0]["epsilon"] == pytest.approx(2.0)
    assert privacy["composition"][-1]["epsilon"] == pytest.approx(claim.guarantee().composed(64)[0], abs=1e-3)
    assert "(epsilon=2, delta=1e-05)-DP per query" in html and 'id="composition"' in html
    assert "the claimed guarantee is not delivered" in html


def test_the_pac_bound_stands_beside_the_attacks_in_plain_words(ledger, tmp_path):
    with session_scope() as session:
        dep = Deployment(name="support-search")
        session.add(dep)
        session.flush()
        version = Version(deployment_id=dep.id, name="v2", encoder={}, transform={"kind": "none"}, guarantee="none")
        session.add(version)
        session.flush()
        run = AuditRun(dag_id="privacy_audit", run_id="manual__1", deployment_id=dep.id, version_id=version.id,
                       status="succeeded", verdict="gate", sample_size=120, thresholds={},
                       started_at=DAY0, finished_at=DAY0)
        run.scores = [Score(task="probe_pac_privacy", probe="pac_privacy", metric="mutual_information_bits",
                            value=6.0, ci_low=6.0, ci_high=6.0, n=64, target="canaries"),
                      Score(task="probe_pac_privacy", probe="pac_privacy", metric="posterior_success",
                            value=1.0, ci_low=1.0, ci_high=1.0, n=64, target="canaries"),
                      Score(task="probe_candidate_inversion", probe="candidate_inversion", metric="top1",
                            value=0.97, ci_low=0.9, ci_high=1.0, n=30, target="canaries")]
        session.add(run)
        session.flush()
        content = audit_report.build(session, run)
        from monitors.reports.plain_words import of_run
        sentences = of_run(run)
    html = audit_report.write(tmp_path, content).read_text()
    assert content["privacy"]["pac"]["capped"] and content["privacy"]["pac"]["candidates"] == 64
    assert 'id="pac"' in html and "That is the cap, log2 64 = 6 bits" in html
    assert any("out of 64 equally likely candidates with probability at most 100%" in s for s in sentences)
    assert any("picks the true secret" in s and "97%" in s for s in sentences)
