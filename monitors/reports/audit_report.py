"""The audit report of one run: report.json (data) and report.html (rendered from it).

Computing and rendering are kept apart: `build` gathers numbers from the ledger, `write`
renders them (the trend charts are drawn by monitors.reports.charts from the template). The report
holds names, numbers, run ids and row ids only, never sampled text or vectors.
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.orm import Session

from audits import storage
from audits.coverage import PROBE as COVERAGE
from audits.errors import ConfigError
from audits.storage import Location
from monitors import artifacts
from monitors.config import EmbwardenConfig, load_config
from monitors.config.deployment import stored_location
from monitors.coverage import coverage_explanation
from monitors.gates import status_of
from monitors.ledger.database import session_scope
from monitors.ledger.models import Action, AlertRecord, AuditRun, GateEvent, Score, Validation, Version
from monitors.reports import charts, plain_words
from monitors.thresholds import Levels, all_metric_ranges, is_coverage, split_segment
from monitors.verdicts import INCONCLUSIVE

HISTORY = 30          # runs in a trend chart
DRIFT_PROBE = "drift"
DRIFT_REPORT = "drift.html"   # evidently's report, when the drift check wrote one into the run's folder
MAX_IDS = 10          # example row ids per failed expectation
MAX_OBSERVED = 80     # characters of an observed value that is not a number


def build(session: Session, run: AuditRun) -> dict:
    dep = run.deployment
    gate = status_of(session, dep)
    thresholds = run.thresholds or {}
    scores: list[dict[str, Any]] = []
    for s in run.scores:
        levels = thresholds.get(s.key)
        scores.append({
            "metric": s.key, "probe": s.probe, "target": s.target, "value": s.value, "ci_low": s.ci_low,
            "ci_high": s.ci_high, "n": s.n, "thresholds": levels,
            "basis": (levels.get("basis") or "value") if levels else None,
            "level": _level(levels, s) if levels else "not judged",
        })
        if is_coverage(s.key) and levels:
            scores[-1]["level"] = "covered" if scores[-1]["level"] == "pass" else "not covered"
    run_actions = session.scalars(sa.select(Action).where(Action.audit_run_id == run.id).order_by(Action.id))
    gate_events = session.scalars(sa.select(GateEvent).where(GateEvent.audit_run_id == run.id))
    alerts = session.scalars(sa.select(AlertRecord).where(AlertRecord.audit_run_id == run.id).order_by(AlertRecord.id))
    validations = session.scalars(sa.select(Validation).where(Validation.audit_run_id == run.id)
                                  .order_by(Validation.kind))
    return {
        "deployment": dep.name,
        "version": run.version.name,
        "verdict": run.verdict,
        "plain": plain_words.of_run(run),   # what was found, in words: the report opens with it
        "glossary": {s["metric"]: plain_words.meaning(s["metric"]) for s in scores},
        "status": run.status,
        "error": run.error,
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "audit_run_id": run.id,
        "sample_size": run.sample_size,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "actions": [{"kind": a.kind, "status": a.status, "detail": a.detail, "error": a.error} for a in run_actions],
        "gate": {"state": gate.state, "reason": gate.reason},
        "targets": _targets(session, dep),
        "gate_events": [{"state": g.state, "reason": g.reason} for g in gate_events],
        "alerts": [{"kind": a.kind, "channel": a.channel, "status": a.status, "attempts": a.attempts,
                    "error": a.error} for a in alerts],
        "active_version": dep.active_version.name if dep.active_version else None,
        "scores": scores,
        "thresholds": thresholds,
        "trends": _history(session, run, [s["metric"] for s in scores if "[" not in s["metric"]]),
        "segments": _segments(scores),
        "rising": _rising(run.trends),
        "validations": [_validation(v) for v in validations],
        "drift": {"metrics": [s["metric"] for s in scores if s["probe"] == DRIFT_PROBE], "report": None},
        "privacy": _privacy(run.version, scores),
        "coverage": _coverage(run, scores),
        # Why the run could not judge: the attacker did not cover the sample, or a probe failed.
        "inconclusive": _inconclusive(run),
    }


def _segments(scores: list[dict]) -> list[dict]:
    """Scores of each labelled segment (`token_f1[medical]`), grouped by metric, worst segment first."""
    grouped: dict[str, list[dict]] = {}
    for s in scores:
        metric, segment = split_segment(s["metric"])
        if segment is not None:
            grouped.setdefault(metric, []).append({"segment": segment, "value": s["value"], "ci_low": s["ci_low"],
                                                   "ci_high": s["ci_high"], "n": s["n"], "level": s["level"]})
    return [{"metric": m, "rows": sorted(rows, key=lambda r: -r["value"])} for m, rows in grouped.items()]


def _inconclusive(run: AuditRun) -> str | None:
    return coverage_explanation(run) if run.verdict == INCONCLUSIVE else None


def _coverage(run: AuditRun, scores: list[dict]) -> dict | None:
    """Whether the attacker's corpus covers the sample, and in plain words what to do when not."""
    judged = [s for s in scores if s["probe"] == COVERAGE and s["thresholds"]]
    if not judged:   # not measured: says so when that made the run inconclusive
        return {"covered": False, "explanation": coverage_explanation(run)} if run.verdict == "inconclusive" else None
    covered = all(s["level"] == "covered" for s in judged)
    return {"covered": covered, "explanation": None if covered else coverage_explanation(run)}


def _privacy(version, scores: list[dict]) -> dict:
    """The version's transform, the guarantee it states, what repeated queries cost (composition),
    and what the dp_audit probe measured against the claim."""
    from audits.errors import ConfigError
    from audits.transforms import make_transform

    try:
        guarantee = make_transform(version.transform).guarantee()
    except ConfigError:  # a transform of a newer embwarden: show what the ledger says
        guarantee = None
    audited = {s["metric"].split(".", 1)[1]: s for s in scores if s["probe"] == "dp_audit"}
    pac = {s["metric"].split(".", 1)[1]: s for s in scores if s["probe"] == "pac_privacy"}
    return {
        "transform": version.transform,
        "guarantee": version.guarantee,
        "composition": guarantee.composition_table() if guarantee else [],
        "claimed_epsilon": guarantee.epsilon if guarantee else None,
        "empirical_epsilon": audited.get("empirical_epsilon"),
        "pac": _pac(pac),
    }


def _pac(scores: dict[str, dict]) -> dict | None:
    """The pac_privacy bound in the report's terms: bits (95% bound), the cap log2 K, the posterior bound."""
    import math

    mi, posterior = scores.get("mutual_information_bits"), scores.get("posterior_success")
    if mi is None or posterior is None or not mi.get("n"):
        return None
    cap = math.log2(mi["n"]) if mi["n"] > 1 else 0.0
    return {"bits": mi["ci_high"], "point": mi["value"], "candidates": mi["n"], "cap": cap,
            "capped": mi["ci_high"] >= cap - 1e-6, "posterior": posterior["ci_high"], "prior": 1 / mi["n"]}


def _level(levels: dict, score) -> str:
    judged = Levels.from_mapping(levels)
    return judged.crossed(judged.judged(score))


def _history(session: Session, run: AuditRun, metrics: list[str]) -> dict[str, list[dict]]:
    """Each metric's scores over the last HISTORY succeeded runs of the deployment up to this one, oldest first.

    One query: the last runs as a subquery, joined to their scores and versions.
    """
    series: dict[str, list[dict]] = {m: [] for m in metrics}
    if not metrics:
        return series
    recent = (sa.select(AuditRun.id)
              .where(AuditRun.deployment_id == run.deployment_id, AuditRun.status == "succeeded",
                     AuditRun.id <= run.id)
              .order_by(AuditRun.finished_at.desc().nulls_last(), AuditRun.id.desc())
              .limit(HISTORY).subquery())
    keys = [m.split(".", 1) for m in metrics]
    rows = session.execute(
        sa.select(Score.probe, Score.metric, Score.value, Score.ci_low, Score.ci_high,
                  AuditRun.id, AuditRun.finished_at, Version.name)
        .join(AuditRun, Score.audit_run_id == AuditRun.id)
        .join(recent, recent.c.id == AuditRun.id)
        .join(Version, Version.id == AuditRun.version_id)
        .where(Score.probe.in_({p for p, _ in keys}), Score.metric.in_({m for _, m in keys}))
        .order_by(AuditRun.finished_at.asc().nulls_first(), AuditRun.id, Score.id))
    for probe, metric, value, low, high, run_id, finished, version in rows:
        key = f"{probe}.{metric}"
        if key in series and not any(p["audit_run_id"] == run_id for p in series[key][-1:]):
            series[key].append({"audit_run_id": run_id, "finished_at": finished.isoformat() if finished else None,
                                "value": value, "ci_low": low, "ci_high": high, "version": version})
    return series


def _rising(trends) -> list[dict]:
    """The run's trend findings ({metric: {tau, p, values, level}}) as rows for the report."""
    if not isinstance(trends, dict):
        return []
    rows = []
    for metric, found in trends.items():
        if not isinstance(found, dict):
            continue
        values = found.get("values")
        rows.append({"metric": str(metric), "runs": len(values) if isinstance(values, list) else None,
                     "tau": _number(found.get("tau")), "p": _number(found.get("p")),
                     "level": found.get("level") if isinstance(found.get("level"), str) else None})
    return rows


def _validation(v: Validation) -> dict:
    """A Validation row with only the fields a reviewer needs: names, counts, row ids."""
    results = []
    for item in v.results or []:
        if not isinstance(item, dict):
            continue
        ids = item.get("unexpected_ids") or []
        results.append({
            "expectation": str(item.get("expectation", "")), "column": item.get("column"),
            "success": bool(item.get("success")), "observed": _observed(item.get("observed")),
            "unexpected_count": item.get("unexpected_count"),
            "unexpected_ids": [i for i in ids if isinstance(i, int | str)][:MAX_IDS] if isinstance(ids, list) else [],
        })
    return {"kind": v.kind, "success": v.success, "row_count": v.row_count, "results": results}


def _observed(value):
    """Numbers pass; anything else is shown as a short string (the validator stores no sampled text)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_OBSERVED else text[:MAX_OBSERVED - 1] + "…"


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _chart(series: list[dict], metric: str, levels: dict | None, current: int) -> Markup:
    # line_chart escapes every text it writes (html.escape), so its SVG is safe to insert as is.
    bounds = all_metric_ranges().get(split_segment(metric)[0])
    return Markup(charts.line_chart(series, title=metric, levels=levels, highlight=current, bounds=bounds))


_env = Environment(loader=PackageLoader("monitors.reports", "templates"), autoescape=select_autoescape(["html"]))
_env.globals["chart"] = _chart


def write(folder: Location, content: dict) -> Location:
    """report.json and report.html in the run's folder (local or on the object store)."""
    examples = {name: list(result.examples) for name, result in artifacts.read_probe_results(folder).items()
                if result.examples}
    content = {**content, "examples": examples}
    if storage.exists(folder / DRIFT_REPORT):
        content = {**content, "drift": {**content.get("drift", {"metrics": []}), "report": DRIFT_REPORT}}
    storage.write_bytes(folder / "report.json", json.dumps(content, indent=2, default=str).encode())
    html_path = folder / "report.html"
    storage.write_bytes(html_path, _env.get_template("report.html").render(r=content).encode())
    return html_path


def report_url(config: EmbwardenConfig, folder: Location) -> str:
    """Where the run's report can be opened: under `artifacts.base_url` when set, else its path or URL."""
    html = folder / "report.html"
    if not config.artifacts.base_url:
        return str(html)
    relative = storage.relative(html, config.artifacts_root)
    return f"{config.artifacts.base_url.rstrip('/')}/{relative}"


def rerender_report(audit_run_id: int, force: bool = False, config_path: str | None = None) -> str:
    """The path of a run's report.html; rendered (again) when asked or when the file is gone."""
    config = load_config(config_path)
    with session_scope() as session:
        run = session.get(AuditRun, audit_run_id)
        if run is None:
            raise ConfigError(f"audit run {audit_run_id}: no such run in the ledger")
        path = stored_location(run.report_path) if run.report_path else None
        if force or path is None or not storage.exists(path):
            folder = artifacts.run_dir(config.artifacts_root, run.deployment.name, run.dag_id, run.run_id)
            path = write(folder, build(session, run))
            run.report_path = str(path)
        return str(path)


def _targets(session, dep) -> dict | None:
    """Whether the deployment's targets (MLflow alias, CD webhook) agree with the ledger, as of now."""
    from monitors.targets import out_of_sync

    sync = out_of_sync(session, dep)
    return None if sync is None else {"in_sync": sync.in_sync, "summary": sync.summary(), "failed": sync.failed}
