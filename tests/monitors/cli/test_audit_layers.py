"""`embwarden audit --layers`: each layer of a local encoder attacked, as a table, JSON and an HTML page."""

import json
import re
import xml.etree.ElementTree as ET

import yaml

from audits import corpora
from monitors.cli.main import main
from tests.audits.test_layers import PARAMS

BUNDLED = "bundled:all-MiniLM-L6-v2"


def layers(cache, *extra):
    return main(["audit", "--layers", *extra, "--params", json.dumps(PARAMS), "--cache", str(cache)])


def test_the_table_json_and_report_say_which_layer_leaks_most(tmp_path, model_cache, capsys):
    report, out = tmp_path / "reports" / "layers.html", tmp_path / "layers.json"
    code = layers(model_cache, "--encoder", BUNDLED, "--aux", "synthetic:300", "--targets", "canaries:40",
                  "--report", str(report), "--json", str(out))
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = printed.splitlines()
    assert re.match(r"layer\s+token F1 \[95% CI\]\s+AUC \[95% CI\]$", lines[0])
    rows = lines[1:8]
    assert [int(r.split()[0]) for r in rows] == list(range(7))
    assert "embeddings" in rows[0] and "output" in rows[6]
    assert all(re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]\s+\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]$", r) for r in rows)
    assert " leaks most: an attacker names the texts' content words with token F1 " in printed

    data = json.loads(out.read_text())
    assert [row["layer"] for row in data["layers"]] == list(range(7)) and data["layer_count"] == 7
    assert data["setup"]["transform"] == "none" and data["targets"] == 40 and data["auxiliary_texts"] == 300
    f1 = [next(s for s in row["scores"] if s["metric"] == "token_f1") for row in data["layers"]]
    assert all(0 <= s["ci_low"] <= s["value"] <= s["ci_high"] <= 1 for s in f1)
    leakiest = data["summary"]["leakiest"]
    assert leakiest["value"] == max(s["value"] for s in f1) and data["summary"]["findings"][0] in printed

    html = report.read_text()
    assert "What it means" in html and data["summary"]["findings"][0].replace("'", "&#39;") in html
    charts = re.findall(r"<svg .*?</svg>", html, re.S)
    assert 1 <= len(charts) <= 2                # token F1 per layer, and AUC unless it is the same at every layer
    svg = ET.fromstring(charts[0])             # well-formed, with the interval band, a point per layer
    ns = "{http://www.w3.org/2000/svg}"
    assert "token F1 per layer" in charts[0] and svg.find(f"{ns}polygon") is not None
    assert len(svg.findall(f"{ns}circle")) == 7 and len(svg.findall(f".//{ns}circle[@class='recommended']")) == 1
    # Numbers only: no canary text, no secret of one, in any output.
    canaries = corpora.canaries(40, 7)
    secrets = {v for s in canaries.secrets for v in s.values() if len(v) > 3}
    for output in (printed, html, out.read_text()):
        assert not any(text in output for text in canaries.texts)
        # Whole tokens: a 4-digit secret ("3914") may sit inside a number of the JSON (0.883914...).
        assert not [secret for secret in secrets if re.search(rf"(?<!\w){re.escape(secret)}(?!\w)", output)]

    # Chosen layers only; `--json -` prints the document instead of the table.
    assert main(["audit", "--layers", "0,6", "--encoder", BUNDLED, "--aux", "synthetic:300", "--targets",
                 "canaries:40", "--probes", "bow_inversion", "--params", json.dumps(PARAMS), "--cache",
                 str(model_cache), "--json", "-"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert [row["layer"] for row in only["layers"]] == [0, 6] and only["probes"] == ["bow_inversion"]
    assert only["layers"][1]["scores"] == data["layers"][6]["scores"][:len(only["layers"][1]["scores"])]


def deployment_config(tmp_path, cache):
    path = tmp_path / "embwarden.yaml"
    path.write_text(yaml.safe_dump({
        "cache_dir": str(cache),
        "deployments": {"search": {
            "source": {"kind": "sql", "url": f"sqlite:///{tmp_path}/none.db", "table": "t",
                       "columns": {"id": "id", "vector": "embedding", "version": "version", "text": "body"}},
            "versions": {"v1": {"encoder": {"kind": "local", "model": BUNDLED},
                                "transform": {"kind": "gaussian_noise", "sigma": 0.05}},
                         "api": {"encoder": {"kind": "openai", "url": "http://127.0.0.1:9/v1", "model": "m"},
                                 "transform": {"kind": "none"}}},
            "active_version": "v1",
            "auxiliary_corpus": {"kind": "synthetic", "size": 300, "seed": 1},
            "canaries": {"count": 40, "seed": 7},
            "probes": PARAMS}}}))
    return str(path)


def test_a_deployments_local_version_is_audited_without_its_transform(tmp_path, model_cache, capsys):
    config = deployment_config(tmp_path, model_cache)
    assert main(["--config", config, "audit", "--layers", "6", "--deployment", "search"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^6\s+output\s+\d\.\d{3} \[", printed, re.M)
    assert "note: search v1's transform (gaussian_noise sigma=0.05) is not applied here" in printed
    assert "Only this layer was scored" in printed


def test_http_encoders_unknown_layers_and_bad_input_are_refused_with_exit_2(tmp_path, model_cache, capsys):
    config = deployment_config(tmp_path, model_cache)
    assert main(["--config", config, "audit", "--layers", "--deployment", "search", "--version", "api"]) == 2
    assert "search api embeds through an HTTP API (encoder kind openai): its layers are out of reach" \
        in capsys.readouterr().err
    assert main(["audit", "--layers", "--encoder", "https://api.example.com/v1", "--aux", "synthetic:300"]) == 2
    assert "is an HTTP embedding API: its layers are out of reach" in capsys.readouterr().err
    assert main(["audit", "--layers", "9", "--encoder", BUNDLED, "--aux", "synthetic:300"]) == 2
    assert "--layers: layer 9 does not exist; this model has layers 0 to 6" in capsys.readouterr().err
    assert main(["audit", "--layers", "--aux", "synthetic:300"]) == 2
    assert "audit --layers: --encoder required" in capsys.readouterr().err
    assert main(["audit", "--layers", "--encoder", BUNDLED, "--aux", "synthetic:300", "--noise-sigma", "0.1"]) == 2
    assert "--noise-sigma does not apply: a layer audit attacks the encoder's hidden states" in capsys.readouterr().err
    assert main(["audit", "--layers", "--encoder", BUNDLED, "--aux", "synthetic:300", "--probes", "dp_audit"]) == 2
    assert "do not run per layer" in capsys.readouterr().err
    assert main(["audit", "--layers", "--encoder", BUNDLED, "--aux", "synthetic:300", "--targets", "canaries:x"]) == 2
    assert "expected canaries:COUNT with a whole number" in capsys.readouterr().err
    assert main(["audit", "--encoder", BUNDLED, "--aux", "synthetic:300", "--report", "x.html"]) == 2
    assert "--report goes with --layers" in capsys.readouterr().err
