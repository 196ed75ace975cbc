"""Small line charts drawn as inline SVG strings: no scripts, no external files, no plotting library.
One frame for all: a metric's history (line_chart) and a measure against a transform's strength
(strength_chart) share the axis, the interval band, the level lines and their margin labels; a
frontier of several transform kinds also sets utility against leakage, one curve per kind
(tradeoff_chart).

Every piece of text that goes into the SVG (titles, dates, version names) is escaped with
`html.escape`; the caller decides whether to mark the result safe for its template.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

# The verdict badges' colours in templates/report.html.
LEVEL_COLOURS = {"warn": "#ef8f00", "gate": "#c62828", "rollback": "#6a1b9a"}
LINE = "#2f5597"
BAND = "#9db4dd"
MUTED = "#667"
GRID = "#e3e6ee"


def line_chart(points: Sequence[Mapping], *, title: str, levels: Mapping | None = None,
               highlight: int | None = None, width: int = 600, height: int = 160,
               bounds: tuple[float, float | None] | None = None) -> str:
    """One metric's history as an SVG line chart.

    points: oldest first, each {audit_run_id, finished_at, value, ci_low, ci_high, version}
    (finished_at a datetime or an ISO string). The 95% interval is a shaded band; `levels`
    ({warn, gate, rollback, basis}, values may be None) are dashed horizontal lines; the point
    whose audit_run_id is `highlight` is ringed, its value and interval written after the title.
    The y axis spans the data and the levels, labelled with its min and max, and never leaves the
    metric's own `bounds` (an AUC axis is not drawn to 1.5); the x axis shows the first and last
    run dates.
    """
    pts = [_clean(p) for p in points if _finite(p.get("value"))]
    limits = [(name, float(levels[name])) for name in LEVEL_COLOURS
              if levels and _finite(levels.get(name))]
    left, right, top, bottom = 48, 92, 24, 26
    pw, ph = width - left - right, height - top - bottom
    current = next((p for p in pts if highlight is not None and p["audit_run_id"] == highlight), None)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}: {len(pts)} runs">',
           f'<text x="{left}" y="15" font-size="13" fill="#1d2330"><tspan font-weight="600">{escape(title)}</tspan>']
    if current:
        out.append(f'<tspan dx="10" font-size="11.5">this run {escape(_fmt(current["value"]))}</tspan>'
                   f'<tspan font-size="11.5" fill="{MUTED}"> (95% {escape(_fmt(current["ci_low"]))}'
                   f'–{escape(_fmt(current["ci_high"]))})</tspan>')
    out.append("</text>")
    if not pts:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" font-size="12" fill="{MUTED}" '
                   'text-anchor="middle">no finished run to chart yet</text></svg>')
        return "".join(out)

    values = [v for p in pts for v in (p["value"], p["ci_low"], p["ci_high"])] + [v for _, v in limits]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:   # one value: a band around it, the width of a tenth of the metric's range
        half = 0.05 * (bounds[1] - bounds[0]) if bounds and bounds[1] is not None else max(abs(lo) * 0.1, 0.05)
        lo, hi = lo - half, hi + half
    if bounds:
        lo = max(lo, bounds[0])
        hi = hi if bounds[1] is None else min(hi, bounds[1])
        if hi - lo < 1e-12:
            lo, hi = (hi - 0.1, hi) if bounds[1] is not None and hi >= bounds[1] else (lo, lo + 0.1)
    inset = 6                                      # keeps the extreme points off the frame

    def y(v: float) -> float:
        return top + inset + (hi - v) / (hi - lo) * (ph - 2 * inset)

    n = len(pts)
    xs = [left + pw / 2] if n == 1 else [left + i * pw / (n - 1) for i in range(n)]

    # frame: min and max gridlines with their labels, baseline, dates
    _y_axis(out, hi, lo, y, left, top, pw, ph)
    base = top + ph + 15
    out.append(f'<text x="{left}" y="{base}" font-size="10.5" fill="{MUTED}">{escape(pts[0]["date"])}</text>')
    if n > 1:
        out.append(f'<text x="{left + pw}" y="{base}" font-size="10.5" fill="{MUTED}" text-anchor="end">'
                   f'{escape(pts[-1]["date"])}</text>')
    basis = (levels or {}).get("basis") or "value"
    legend = f'{n} run{"s" if n != 1 else ""} · shaded: 95% interval' + (f" · levels judge {basis}" if limits else "")
    out.append(f'<text x="{left + pw / 2:.1f}" y="{base}" font-size="10.5" fill="{MUTED}" text-anchor="middle">'
               f'{escape(legend)}</text>')

    # the 95% interval band, then the value line
    if n == 1:
        out.append(f'<rect x="{xs[0] - 8:.1f}" y="{y(pts[0]["ci_high"]):.1f}" width="16" '
                   f'height="{max(y(pts[0]["ci_low"]) - y(pts[0]["ci_high"]), 0.5):.1f}" fill="{BAND}" '
                   'fill-opacity="0.45"/>')
    else:
        _band_and_line(out, [(x, y(p["value"]), y(p["ci_low"]), y(p["ci_high"])) for x, p in zip(xs, pts, strict=True)])

    # threshold levels: dashed lines, labels in the right margin pushed apart when close
    _margin_labels(out, _level_lines(out, limits, y, left, pw), left + pw + 5)

    # the points, each with a tooltip; the current run drawn last, ringed
    for x, p in sorted(zip(xs, pts, strict=True), key=lambda xp: xp[1] is current):
        tip = escape(f'run {p["audit_run_id"]} · {p["date"]} · {p["version"]}: {_fmt(p["value"])} '
                     f'(95% {_fmt(p["ci_low"])}–{_fmt(p["ci_high"])})')
        if p is current:
            out.append(f'<circle cx="{x:.1f}" cy="{y(p["value"]):.1f}" r="5" fill="#fff" stroke="#1d2330" '
                       f'stroke-width="2.2" class="current"><title>this run: {tip}</title></circle>')
        else:
            out.append(f'<circle cx="{x:.1f}" cy="{y(p["value"]):.1f}" r="2.4" fill="{LINE}"><title>{tip}</title>'
                       '</circle>')
    out.append("</svg>")
    return "".join(out)


# -- the frame both charts share -----------------------------------------------------------------
def _y_axis(out: list[str], hi: float, lo: float, y: Callable[[float], float], left: int, top: int, pw: int,
            ph: int) -> None:
    """Gridlines at the axis' max and min, labelled, and the axis line."""
    for v in (hi, lo):
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 5}" y="{y(v) + 3.5:.1f}" font-size="10.5" fill="{MUTED}" '
                   f'text-anchor="end">{escape(_fmt(v))}</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#c5cad6"/>')


def _band_and_line(out: list[str], points: list[tuple[float, float, float, float]]) -> None:
    """The 95% interval as a shaded band and the value as a line; points are (x, y, y_low, y_high)."""
    ring = [(x, high) for x, _, _, high in points] + [(x, low) for x, _, low, _ in reversed(points)]
    out.append(f'<polygon points="{_coords(ring)}" fill="{BAND}" fill-opacity="0.45" stroke="none"/>')
    out.append(f'<polyline points="{_coords([(x, v) for x, v, _, _ in points])}" fill="none" stroke="{LINE}" '
               'stroke-width="1.6" stroke-linejoin="round"/>')


def _level_lines(out: list[str], limits: list[tuple[str, float]], y: Callable[[float], float], left: int,
                 pw: int) -> list[tuple[float, str, str]]:
    """Threshold levels as dashed lines; their labels (y, text, colour) for the right margin."""
    labels = []
    for name, v in limits:
        colour = LEVEL_COLOURS[name]
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="{colour}" '
                   f'stroke-width="1.3" stroke-dasharray="5 4" class="level {name}"/>')
        labels.append((y(v), f"{name} {_fmt(v)}", colour))
    return labels


def _margin_labels(out: list[str], labels: list[tuple[float, str, str]], x: float) -> None:
    """Labels in the right margin at their lines' heights, pushed apart where they would overlap."""
    placed: list[float] = []
    for ly, text, colour in sorted(labels):
        ty = max(ly + 3.5, placed[-1] + 11) if placed else ly + 3.5
        placed.append(ty)
        out.append(f'<text x="{x:g}" y="{ty:.1f}" font-size="10.5" fill="{colour}">{escape(text)}</text>')


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _clean(p: Mapping) -> dict:
    value = float(p["value"])
    low = float(p["ci_low"]) if _finite(p.get("ci_low")) else value
    high = float(p["ci_high"]) if _finite(p.get("ci_high")) else value
    finished = p.get("finished_at")
    date = finished.date().isoformat() if hasattr(finished, "date") else str(finished or "")[:10]
    return {"audit_run_id": p.get("audit_run_id"), "date": date, "version": p.get("version") or "",
            "value": value, "ci_low": min(low, value), "ci_high": max(high, value)}


def _coords(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def strength_chart(points: Sequence[Mapping], *, title: str, x_label: str, log_x: bool,
                   levels: Mapping | None = None, reference: float | None = None, highlight: str | None = None,
                   width: int = 640, height: int = 190) -> str:
    """One measure against the transform's strength, drawn in line_chart's frame.

    points: {x, label, value, ci_low, ci_high, passes}; the 95% interval is a band, `levels`
    dashed lines, `reference` (the value without a transform) a dotted grey line; points that
    fail a gate are red, the point labelled `highlight` (the recommendation) is ringed.
    """
    pts = sorted((dict(p) for p in points if math.isfinite(p["value"])), key=lambda p: p["x"])
    limits = [(name, float(levels[name])) for name in LEVEL_COLOURS
              if levels and isinstance(levels.get(name), int | float)]
    left, right, top, bottom = 48, 132, 24, 40
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}: {len(pts)} points">',
           f'<text x="{left}" y="15" font-size="13" fill="#1d2330" font-weight="600">{escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" font-size="12" fill="{MUTED}" '
                   'text-anchor="middle">not measured</text></svg>')
        return "".join(out)
    values = [v for p in pts for v in (p["value"], p["ci_low"], p["ci_high"])] + [v for _, v in limits]
    values += [reference] if reference is not None and math.isfinite(reference) else []
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    inset = 6

    def y(v: float) -> float:
        return top + inset + (hi - v) / (hi - lo) * (ph - 2 * inset)

    def pos(v: float) -> float:
        return math.log10(v) if log_x else v

    x_lo, x_hi = pos(pts[0]["x"]), pos(pts[-1]["x"])

    def x(v: float) -> float:
        return left + pw / 2 if x_hi == x_lo else left + 8 + (pos(v) - x_lo) / (x_hi - x_lo) * (pw - 16)

    _y_axis(out, hi, lo, y, left, top, pw, ph)
    for p in pts:
        out.append(f'<text x="{x(p["x"]):.1f}" y="{top + ph + 13}" font-size="10.5" fill="{MUTED}" '
                   f'text-anchor="middle">{escape(_fmt(p["x"]))}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 29}" font-size="10.5" fill="{MUTED}" '
               f'text-anchor="middle">{escape(x_label)} · shaded: 95% interval</text>')
    if len(pts) > 1:
        _band_and_line(out, [(x(p["x"]), y(p["value"]), y(p["ci_low"]), y(p["ci_high"])) for p in pts])
    labels = _level_lines(out, limits, y, left, pw)
    if reference is not None and math.isfinite(reference):
        ry = y(reference)
        out.append(f'<line x1="{left}" y1="{ry:.1f}" x2="{left + pw}" y2="{ry:.1f}" stroke="{MUTED}" '
                   'stroke-width="1.1" stroke-dasharray="1.5 3" class="reference"/>')
        labels.append((ry, f"no transform {_fmt(reference)}", MUTED))
    _margin_labels(out, labels, left + pw + 5)
    for p in sorted(pts, key=lambda p: p["label"] == highlight):
        tip = escape(f'{p["label"]}: {_fmt(p["value"])} (95% {_fmt(p["ci_low"])}–{_fmt(p["ci_high"])})'
                     f'{"" if p["passes"] else " · crosses a gate"}')
        colour = LINE if p["passes"] else LEVEL_COLOURS["gate"]
        if p["label"] == highlight:
            out.append(f'<circle cx="{x(p["x"]):.1f}" cy="{y(p["value"]):.1f}" r="5.5" fill="#fff" stroke="#1d2330" '
                       f'stroke-width="2.2" class="recommended"><title>recommended: {tip}</title></circle>')
        else:
            out.append(f'<circle cx="{x(p["x"]):.1f}" cy="{y(p["value"]):.1f}" r="3" fill="{colour}" '
                       f'class="{"pass" if p["passes"] else "fail"}"><title>{tip}</title></circle>')
    out.append("</svg>")
    return "".join(out)


# Colours of the curves of a chart with several series (one per transform kind), in order: none of them
# a level's (orange, red, purple), so that a curve is never read as a threshold.
SERIES = ("#2f5597", "#00897b", "#7cb342", "#6d4c41", "#d81b60", "#546e7a", "#9e9d24", "#0288d1", "#8d6e63")


def tradeoff_chart(series: Mapping[str, Sequence[Mapping]], *, title: str, x_label: str, y_label: str,
                   levels: Mapping | None = None, reference: Mapping | None = None, highlight: str | None = None,
                   width: int = 640, height: int = 230) -> str:
    """Utility against leakage, one curve per series (a transform kind), so that kinds swept over
    different fields can be set side by side (for a leakage metric where higher is worse, up and to
    the left is better).

    series: name -> points {x (leakage), y (utility), label, passes}, each drawn in its order (by
    strength); `levels` (the leakage metric's warn, gate, rollback) are dashed vertical lines;
    `reference` {x, y} (no transform) a grey square; the point labelled `highlight` is ringed.
    """
    named = {name: [dict(p) for p in pts if math.isfinite(p["x"]) and math.isfinite(p["y"])]
             for name, pts in series.items()}
    limits = [(name, float(levels[name])) for name in LEVEL_COLOURS
              if levels and isinstance(levels.get(name), int | float)]
    left, right, top, bottom = 48, 132, 24, 40
    pw, ph = width - left - right, height - top - bottom
    total = sum(len(pts) for pts in named.values())
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart tradeoff" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}: {total} points">',
           f'<text x="{left}" y="15" font-size="13" fill="#1d2330" font-weight="600">{escape(title)}</text>']
    if not total:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" font-size="12" fill="{MUTED}" '
                   'text-anchor="middle">not measured</text></svg>')
        return "".join(out)
    ref = dict(reference) if reference and math.isfinite(reference["x"]) and math.isfinite(reference["y"]) else None
    xs = [p["x"] for pts in named.values() for p in pts] + [v for _, v in limits] + ([ref["x"]] if ref else [])
    ys = [p["y"] for pts in named.values() for p in pts] + ([ref["y"]] if ref else [])
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    if x_hi - x_lo < 1e-12:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    inset = 6

    def x(v: float) -> float:
        return left + inset + (v - x_lo) / (x_hi - x_lo) * (pw - 2 * inset)

    def y(v: float) -> float:
        return top + inset + (y_hi - v) / (y_hi - y_lo) * (ph - 2 * inset)

    _y_axis(out, y_hi, y_lo, y, left, top, pw, ph)
    for v, anchor in ((x_lo, "start"), (x_hi, "end")):
        out.append(f'<text x="{x(v):.1f}" y="{top + ph + 13}" font-size="10.5" fill="{MUTED}" '
                   f'text-anchor="{anchor}">{escape(_fmt(v))}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 29}" font-size="10.5" fill="{MUTED}" '
               f'text-anchor="middle">{escape(x_label)} · up: {escape(y_label)}</text>')
    for name, v in limits:
        out.append(f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{top + ph}" stroke="{LEVEL_COLOURS[name]}" '
                   f'stroke-width="1.3" stroke-dasharray="5 4" class="level {name}"><title>{name} {_fmt(v)}</title>'
                   '</line>')
    legend: list[tuple[float, str, str]] = []
    for i, (name, pts) in enumerate(named.items()):
        colour = SERIES[i % len(SERIES)]
        if len(pts) > 1:
            out.append(f'<polyline points="{_coords([(x(p["x"]), y(p["y"])) for p in pts])}" fill="none" '
                       f'stroke="{colour}" stroke-width="1.6" stroke-linejoin="round" class="series">'
                       f'<title>{escape(name)}</title></polyline>')
        legend.append((top + 8 + i * 13, name, colour))
    if ref:
        out.append(f'<rect x="{x(ref["x"]) - 3.5:.1f}" y="{y(ref["y"]) - 3.5:.1f}" width="7" height="7" '
                   f'fill="{MUTED}" class="reference"><title>no transform: {escape(_fmt(ref["x"]))}, '
                   f'{escape(_fmt(ref["y"]))}</title></rect>')
    ringed = None
    for i, (_, pts) in enumerate(named.items()):
        colour = SERIES[i % len(SERIES)]
        for p in pts:
            tip = escape(f'{p["label"]}: {x_label} {_fmt(p["x"])}, {y_label} {_fmt(p["y"])}'
                         f'{"" if p["passes"] else " · crosses a gate"}')
            if p["label"] == highlight:
                ringed = (p, tip)
                continue
            fill = colour if p["passes"] else "#fff"
            out.append(f'<circle cx="{x(p["x"]):.1f}" cy="{y(p["y"]):.1f}" r="3.2" fill="{fill}" stroke="{colour}" '
                       f'stroke-width="1.4" class="{"pass" if p["passes"] else "fail"}"><title>{tip}</title></circle>')
    if ringed:
        p, tip = ringed
        out.append(f'<circle cx="{x(p["x"]):.1f}" cy="{y(p["y"]):.1f}" r="5.5" fill="#fff" stroke="#1d2330" '
                   f'stroke-width="2.2" class="recommended"><title>recommended: {tip}</title></circle>')
    for ly, name, colour in legend:
        out.append(f'<text x="{left + pw + 8}" y="{ly + 3.5:.1f}" font-size="10.5" fill="{colour}" '
                   f'class="legend">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
