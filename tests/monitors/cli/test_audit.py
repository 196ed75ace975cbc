"""`embwarden audit`: files in, a JSON of scores out, through the same Auditor as the DAG."""

import json

from audits.corpus import generate_messages
from monitors.cli.main import main

METRICS = {"token_precision", "token_recall", "token_f1", "secret_recovery", "top1", "top5", "exposure_bits",
           "auc", "advantage", "bleu", "exact_match", "cosine"}
PARAMS = {"bow_inversion": {"epochs": 5, "bootstrap_resamples": 200},
          "candidate_inversion": {"candidates": 10, "max_trials": 8, "bootstrap_resamples": 200},
          "attribute_inference": {"bootstrap_resamples": 200}}


def write(path, messages):
    path.write_text("".join(json.dumps({"text": m.text, "secrets": m.secrets, "label": m.category}) + "\n"
                            for m in messages))
    return path


def audit(tmp_path, cache, *extra):
    """`embwarden audit` with `cache` as its model cache (the session's: models another test fitted load)."""
    aux = write(tmp_path / "aux.jsonl", generate_messages(300, seed=1))
    targets = write(tmp_path / "targets.jsonl", generate_messages(40, seed=2))
    out = tmp_path / "out.json"
    code = main(["audit", "--encoder", "bundled:all-MiniLM-L6-v2", "--aux", str(aux), "--targets", str(targets),
                 "--params", json.dumps(PARAMS), "--cache", str(cache), "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def test_json_has_every_cpu_probe_score_and_timings(tmp_path, model_cache, capsys):
    code, doc = audit(tmp_path, model_cache, "--noise-sigma", "0.01", "--seed", "3")
    assert code == 0 and doc["errors"] == {}
    assert {s["probe"] for s in doc["scores"]} == {"bow_inversion", "candidate_inversion", "attribute_inference"}
    for score in doc["scores"]:
        assert set(score) == {"probe", "metric", "value", "ci_low", "ci_high", "n"}
        assert score["metric"] in METRICS and score["ci_low"] <= score["value"] <= score["ci_high"]
    assert "bow_inversion.fit_seconds" in doc["timings"] and doc["setup"]["noise_sigma"] == 0.01
    assert "bow_inversion.token_f1 = " in capsys.readouterr().out
    again = audit(tmp_path, model_cache, "--noise-sigma", "0.01", "--seed", "3")[1]   # the models come from the cache
    assert all(again["cached"].values())
    assert {(s["probe"], s["metric"]): s["value"] for s in again["scores"] if s["probe"] != "candidate_inversion"} \
        == {(s["probe"], s["metric"]): s["value"] for s in doc["scores"] if s["probe"] != "candidate_inversion"}


def test_a_probe_the_targets_cannot_feed_is_skipped_or_fails_by_name(tmp_path, model_cache, capsys):
    (tmp_path / "plain.jsonl").write_text('{"text": "just some text about a router"}\n' * 5)
    aux = write(tmp_path / "aux.jsonl", generate_messages(300, seed=1))
    out = tmp_path / "o.json"
    base = ["audit", "--encoder", "bundled:all-MiniLM-L6-v2", "--aux", str(aux), "--targets",
            str(tmp_path / "plain.jsonl"), "--params", json.dumps(PARAMS), "--json", str(out),
            "--cache", str(model_cache)]
    assert main(base) == 0
    assert set(json.loads(out.read_text())["skipped"]) == {"candidate_inversion", "attribute_inference"}
    assert main([*base, "--probes", "candidate_inversion"]) == 1
    assert "candidate_inversion failed: ProbeError" in capsys.readouterr().err


def test_a_malformed_targets_file_names_the_line(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    code = main(["audit", "--encoder", "bundled:all-MiniLM-L6-v2", "--aux", str(tmp_path / "bad.jsonl"),
                 "--targets", str(tmp_path / "bad.jsonl"), "--json", str(tmp_path / "o.json")])
    assert code == 2 and "bad.jsonl line 2: not valid JSON" in capsys.readouterr().err


def test_a_dp_transform_is_audited_and_states_its_guarantee(tmp_path, model_cache):
    code, doc = audit(tmp_path, model_cache, "--transform", '{"kind": "clip_gaussian", "epsilon": 1000}', "--probes",
                      "bow_inversion")
    assert code == 0 and doc["errors"] == {}
    assert doc["setup"]["guarantee"].startswith("(epsilon=1000, delta=1e-05)-DP per query")
    (tmp_path / "clean").mkdir()
    clean = audit(tmp_path / "clean", model_cache, "--probes", "bow_inversion")[1]
    f1 = {d: next(s["value"] for s in doc_["scores"] if s["metric"] == "token_f1")
          for d, doc_ in (("dp", doc), ("clean", clean))}
    assert f1["dp"] < f1["clean"]          # sigma 0.049 per coordinate costs the attacker words
    assert main(["audit", "--encoder", "bundled:all-MiniLM-L6-v2", "--aux", "a", "--targets", "b", "--json", "c",
                 "--transform", '{"kind": "clip_gaussian", "epsilon": 1}', "--noise-sigma", "0.1"]) == 2


def test_coverage_says_whether_the_attacker_knows_the_targets_kind_of_text(tmp_path, model_cache, capsys):
    """Real quotations as targets: the synthetic templates do not cover them, quotations of the same kind do."""
    import random

    from audits import general

    quotes = general._read(["gcide"])
    random.Random(4).shuffle(quotes)
    targets, same_kind = quotes[:120], quotes[120:720]
    (tmp_path / "targets.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in targets))
    (tmp_path / "quotes.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in same_kind))
    documents = {}
    for name, aux in (("synthetic", "synthetic:600"), ("in_domain", str(tmp_path / "quotes.jsonl"))):
        out = tmp_path / f"{name}.json"
        main(["audit", "--encoder", "bundled:all-MiniLM-L6-v2", "--aux", aux, "--targets",
              str(tmp_path / "targets.jsonl"), "--probes", "bow_inversion", "--params", json.dumps(PARAMS),
              "--cache", str(model_cache), "--json", str(out)])
        documents[name] = json.loads(out.read_text())
    synthetic, in_domain = documents["synthetic"]["coverage"], documents["in_domain"]["coverage"]
    assert synthetic["covered"] is False and in_domain["covered"] is True
    assert "did not know this kind of text" in synthetic["explanation"] and "explanation" not in in_domain
    by_metric = {d: {s["metric"]: s["value"] for s in documents[d]["coverage"]["scores"]} for d in documents}
    assert by_metric["synthetic"]["embedding"] < 0.1 < 0.5 < by_metric["in_domain"]["embedding"]
    err = capsys.readouterr().err
    assert "inconclusive: The attacker did not know this kind of text" in err
