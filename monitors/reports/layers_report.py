"""The layer-wise audit's outputs (`embwarden audit --layers`): the JSON document, the plain-text
table, what it means in words (which layer leaks most, what to do), and the HTML page with a
chart of token F1 per layer drawn by monitors.reports.charts. Numbers and names only: never a
text of the targets or of the attacker's corpus.
"""

from __future__ import annotations

from pathlib import Path

from audits.layers import AUC, HEADLINE, LayerAudit
from monitors.reports.charts import strength_chart


def document(result: LayerAudit, setup: dict, notes: list[str]) -> dict:
    """What `--json` writes: one row per layer with every score, the findings in words, the setup."""
    data = result.to_dict()
    data["setup"] = setup
    data["notes"] = list(notes)
    data["summary"] = summary(data)
    return data


def _point(row: dict, key: str) -> dict | None:
    score = next((s for s in row["scores"] if f"{s['probe']}.{s['metric']}" == key), None)
    if score is None:
        return None
    return {"layer": row["layer"], "name": row["name"], "value": score["value"], "ci_low": score["ci_low"],
            "ci_high": score["ci_high"], "n": score["n"]}


def series(data: dict, key: str = HEADLINE) -> list[dict]:
    """`key`'s score of each layer that has it: {layer, name, value, ci_low, ci_high, n}, in layer order."""
    return [p for row in data["layers"] if (p := _point(row, key)) is not None]


def _named(p: dict) -> str:
    return {"embeddings": "the embedding layer (0)", "output": f"the output layer ({p['layer']})"}.get(
        p["name"], f"layer {p['layer']}")


def _value(p: dict) -> str:
    return f"{p['value']:.3f} (95% {p['ci_low']:.3f}–{p['ci_high']:.3f})"


def summary(data: dict) -> dict:
    """The leakiest layer, the output layer's score and the findings, from the document's rows."""
    points = series(data, HEADLINE)
    last = data["layer_count"] - 1
    leakiest = max(points, key=lambda p: p["value"], default=None)
    output = next((p for p in points if p["layer"] == last), None)
    auc = series(data, AUC)
    return {"metric": HEADLINE, "leakiest": leakiest, "output": output,
            "auc_leakiest": max(auc, key=lambda p: p["value"], default=None),
            "findings": findings(points, last, auc)}


def findings(points: list[dict], last: int, auc: list[dict] | None = None) -> list[str]:
    """In plain words: which layer leaks most, how the output compares, and what to do about it."""
    if not points:
        return ["No layer was scored for token F1 (see the errors): nothing can be said about where the leak is."]
    top = max(points, key=lambda p: p["value"])
    out = next((p for p in points if p["layer"] == last), None)
    if len(points) == 1:
        return [f"{_named(top)[0].upper()}{_named(top)[1:]}: an attacker names the texts' content words with token "
                f"F1 {_value(top)}. Only this layer was scored: audit all of them (--layers all) to see where the "
                "leak comes from and whether restricting layers helps."] + _auc_line(auc, last)
    lines = [f"{_named(top)[0].upper()}{_named(top)[1:]} leaks most: an attacker names the texts' content words "
             f"with token F1 {_value(top)}."]
    if len(points) > 1 and all(p["ci_high"] >= top["ci_low"] for p in points):
        lines[0] += (" Every audited layer's 95% interval reaches it: the layers leak about equally, and the ranking "
                     "among them is within the noise of this measurement.")
    if out is None:
        lines.append(f"The output layer ({last}) was not audited: add it to know whether restricting layers helps.")
    elif out is top:
        lines.append("The leak peaks at the output, which is what the deployment returns: restricting or dropping "
                     "earlier layers does not help. Protect the output (a privacy transform) or retrain the encoder.")
    elif out["ci_high"] >= top["ci_low"]:
        lines.append(f"The output layer ({last}) leaks as much as {_named(top)}: {out['value']:.3f} against "
                     f"{top['value']:.3f}, their 95% intervals overlap. Restricting later layers does not help: "
                     "what the deployment returns carries the leak; protect the output (a privacy transform) or "
                     "retrain the encoder.")
    else:
        above = [p["layer"] for p in points if p["ci_low"] > out["ci_high"]]
        lines.append(f"The output layer ({last}) leaks less: {out['value']:.3f} against {top['value']:.3f}, the "
                     "95% intervals apart, so the last layers discard part of what the earlier ones hold. Never "
                     f"serve, log or store the hidden states of layer{'s' if len(above) > 1 else ''} "
                     f"{_join(above)}; the output itself still leaks {out['value']:.3f}.")
    if out is not None:
        first = next((p for p in sorted(points, key=lambda p: p["layer"]) if p["ci_high"] >= out["value"]), None)
        if first is not None and first["layer"] == 0:
            lines.append(f"Already the embedding layer (0) leaks at the output's level ({first['value']:.3f} against "
                         f"{out['value']:.3f}): the words are recoverable from the token embeddings themselves, "
                         "before any transformer layer mixes them, and no later layer removes them. Retraining only "
                         "the last layers will not help; protect the output or retrain the model from its embeddings "
                         "up.")
        elif first is not None and first["layer"] < last:
            lines.append(f"Already at layer {first['layer']} the leak reaches the output's level ({first['value']:.3f} "
                         f"against {out['value']:.3f}), and the layers after it do not remove it: a fix that "
                         f"retrains only the last layers leaves it in; change layers up to {first['layer']} too, "
                         "or protect the output.")
    return lines + _auc_line(auc, last)


def _auc_line(auc: list[dict] | None, last: int) -> list[str]:
    if not auc:
        return []
    best = max(auc, key=lambda p: p["value"])
    at_out = next((p for p in auc if p["layer"] == last), None)
    return [f"Attribute inference is easiest from {_named(best)}: AUC {_value(best)}"
            + (f"; at the output {at_out['value']:.3f}." if at_out and at_out is not best else ".")]


def _join(layers: list[int]) -> str:
    return ", ".join(str(n) for n in layers[:-1]) + (" and " if len(layers) > 1 else "") + str(layers[-1])


def table(data: dict) -> str:
    """The layers as a plain-text table: layer, token F1 [95% interval], AUC [95% interval] when measured."""
    has_auc = any(_point(row, AUC) for row in data["layers"])
    head = ["layer", "", "token F1 [95% CI]"] + (["AUC [95% CI]"] if has_auc else [])
    rows = []
    for row in data["layers"]:
        cells = [str(row["layer"]), row["name"] if row["name"] in ("embeddings", "output") else ""]
        for key in (HEADLINE, AUC) if has_auc else (HEADLINE,):
            p = _point(row, key)
            probe = key.split(".", 1)[0]
            cells.append(f"{p['value']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]" if p
                         else "failed" if probe in row["errors"] else "—")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


def charts_of(data: dict) -> list[str]:
    """Token F1 per layer with its 95% band, the leakiest layer ringed; AUC per layer when measured."""
    last = data["layer_count"] - 1
    x_label = f"layer (0 = embeddings, {last} = output)"
    out = []
    for key, title in ((HEADLINE, "token F1 per layer (bow_inversion)"), (AUC, "AUC per layer (attribute_inference)")):
        points = series(data, key)
        if key == AUC and len({v for p in points for v in (p["value"], p["ci_low"], p["ci_high"])}) <= 1:
            continue   # not measured, or the same at every layer (AUC 1.000 throughout): the table says it
        top = max(points, key=lambda p: p["value"], default=None)
        out.append(strength_chart(
            [{"x": p["layer"], "label": _label(p), "value": p["value"], "ci_low": p["ci_low"],
              "ci_high": p["ci_high"], "passes": True} for p in points],
            title=title, x_label=x_label, log_x=False, highlight=_label(top) if top else None))
    return out


def _label(p: dict) -> str:
    return f"layer {p['layer']}" + ("" if p["name"] == f"layer {p['layer']}" else f" ({p['name']})")


def write_html(data: dict, path: Path) -> Path:
    """The page: findings, the chart(s), the table, the setup. Every value is escaped by the template."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("monitors.reports", "templates"), autoescape=select_autoescape(["html"]))
    rows = [{"layer": row["layer"], "name": row["name"], "f1": _point(row, HEADLINE), "auc": _point(row, AUC),
             "errors": row["errors"]} for row in data["layers"]]
    html = env.get_template("layers.html").render(
        d=data, rows=rows, charts=[Markup(c) for c in charts_of(data)],   # strength_chart escapes its text
        has_auc=any(r["auc"] for r in rows))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    return path
