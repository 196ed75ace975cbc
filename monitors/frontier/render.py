"""A frontier's record: frontier.json (the data) and frontier.html (charts of utility and leakage
against strength; with several kinds, first utility against leakage with one curve per kind, then
each kind's own charts), and the CLI's plain-text table. Numbers and names only."""

from __future__ import annotations

import json
from dataclasses import asdict

from audits import storage
from audits.storage import Location
from monitors.frontier.grid import knob
from monitors.frontier.results import BLOCKING, Frontier, FrontierPoint, K
from monitors.reports.charts import strength_chart, tradeoff_chart


def folder_for(config, deployment: str, run_id: str) -> Location:
    from monitors import artifacts

    return artifacts.run_dir(config.artifacts_root, "frontier", deployment, run_id)


def write(frontier: Frontier, folder: Location) -> tuple[Location, Location]:
    """frontier.json (the data) and frontier.html (rendered from it); numbers and names only."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    folder = storage.as_location(folder)
    data = frontier.to_dict()
    json_path = folder / "frontier.json"
    storage.write_bytes(json_path, json.dumps(data, indent=2).encode())
    env = Environment(loader=PackageLoader("monitors.reports", "templates"), autoescape=select_autoescape(["html"]))
    metrics = sorted({m for p in frontier.points for m in p.scores})
    if len(frontier.kinds) == 1:
        charts, groups = [Markup(c) for c in charts_of(frontier)], []
    else:   # one curve per kind in the utility-leakage plane, then each kind against its own field
        charts = [Markup(c) for c in tradeoff_charts(frontier)]
        groups = [{"kind": kind, "param": param, "axis": knob(kind).axis,
                   "charts": [Markup(c) for c in charts_of(frontier, kind)]}
                  for kind, param in frontier.params().items()]
    html_path = folder / "frontier.html"
    storage.write_bytes(html_path, env.get_template("frontier.html").render(
        f=data, charts=charts, groups=groups, metrics=metrics, k=K,
        axis=knob(frontier.kinds[0]).axis if len(frontier.kinds) == 1 else None).encode())
    return json_path, html_path


def shown_metrics(frontier: Frontier) -> list[str]:
    """The gated metrics of the probes swept, or, without gates, each probe's first metric."""
    from audits.probes import PROBES

    gated = [m for m, lv in sorted(frontier.thresholds.items())
             if m.split(".", 1)[0] in frontier.probes and any(getattr(lv, b) is not None for b in BLOCKING)]
    return gated or [f"{p}.{next(iter(PROBES[p].metrics))}" for p in frontier.probes if p in PROBES]


def charts_of(frontier: Frontier, kind: str | None = None) -> list[str]:
    """Utility, then each gated metric (or, without gates, each probe's first metric), against strength:
    of the frontier's one kind, or of `kind` among several."""
    kind = kind or frontier.kinds[0]
    grid_points = frontier.points_of(kind)
    strengths = [p.strength for p in grid_points if p.strength is not None]
    log_x = len(strengths) > 1 and min(strengths) > 0 and max(strengths) / min(strengths) >= 10
    baseline = next((p for p in frontier.points if p.baseline), None)
    chosen = frontier.recommendation.label
    axis = knob(kind).axis
    prefix = f"{kind}: " if len(frontier.kinds) > 1 else ""
    out = [strength_chart([_xy(p, p.utility.recall, p.utility.ci_low, p.utility.ci_high) for p in grid_points],
                          title=f"{prefix}utility: retrieval recall@{K}", x_label=axis, log_x=log_x,
                          reference=baseline.utility.recall if baseline else None, highlight=chosen)]
    for metric in shown_metrics(frontier):
        pts = [_xy(p, s.value, s.ci_low, s.ci_high) for p in grid_points if (s := p.scores.get(metric))]
        ref = baseline.scores.get(metric) if baseline else None
        levels = frontier.thresholds.get(metric)
        out.append(strength_chart(pts, title=f"{prefix}leakage: {metric}", x_label=axis, log_x=log_x,
                                  levels=asdict(levels) if levels else None,
                                  reference=ref.value if ref else None, highlight=chosen))
    return out


def tradeoff_charts(frontier: Frontier) -> list[str]:
    """Per leakage metric shown: recall@K against it, one curve per kind (its points by strength)."""
    baseline = next((p for p in frontier.points if p.baseline), None)
    out = []
    for metric in shown_metrics(frontier):
        series = {kind: [{"x": s.value, "y": p.utility.recall, "label": p.label, "passes": p.passes_gates}
                         for p in frontier.points_of(kind) if (s := p.scores.get(metric))]
                  for kind in frontier.kinds}
        ref = baseline.scores.get(metric) if baseline else None
        levels = frontier.thresholds.get(metric)
        out.append(tradeoff_chart(series, title=f"utility against leakage: {metric}, one curve per kind",
                                  x_label=metric, y_label=f"recall@{K}", levels=asdict(levels) if levels else None,
                                  reference={"x": ref.value, "y": baseline.utility.recall} if ref else None,
                                  highlight=frontier.recommendation.label))
    return out


def _xy(point: FrontierPoint, value: float, low: float, high: float) -> dict:
    return {"x": point.strength, "label": point.label, "value": value, "ci_low": low, "ci_high": high,
            "passes": point.passes_gates}


def table(frontier: Frontier) -> str:
    """The points as a plain-text table, for the CLI."""
    gated = [m for m, lv in sorted(frontier.thresholds.items())
             if m.split(".", 1)[0] in frontier.probes and any(getattr(lv, b) is not None for b in BLOCKING)]
    headline = gated or sorted({m for p in frontier.points for m in p.scores})[:4]
    head = ["transform", f"recall@{K}", "95% interval", "loss", *headline, "gates"]
    rows = []
    for p in frontier.points:
        rows.append([p.label, f"{p.utility.recall:.3f}", f"{p.utility.ci_low:.3f}-{p.utility.ci_high:.3f}",
                     "—" if p.baseline else f"{p.utility_loss:+.3f}",
                     *(f"{p.scores[m].value:.3f}" if m in p.scores else "—" for m in headline),
                     ("pass" if p.passes_gates else "FAIL") + (" (baseline)" if p.baseline else "")])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [head, *rows])
