"""The privacy-utility frontier: recall@10, a real sweep, its report and the privacy_frontier DAG run by
Airflow (judging and recommending: test_recommend.py)."""

import hashlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from markupsafe import escape

from audits import corpora
from audits.errors import ConfigError
from audits.paraphrase import PARAPHRASES, paraphrase_pairs
from audits.pipeline import EmbeddingCache
from audits.transforms import GaussianNoise
from monitors.cli.main import main as cli
from monitors.config import load_config
from monitors.frontier import grid, measure, render
from monitors.frontier.recommend import recommend
from monitors.frontier.results import Frontier
from monitors.ledger.database import session_scope
from monitors.reports import charts
from monitors.thresholds import Levels
from tests.conftest import REPO
from tests.helpers import migrated_airflow, write_config
from tests.monitors.frontier.points import F1, point

DEP = "support-search"
SMALL = {"aux_size": 400, "epochs": 10, "canaries": 60}   # every config of this module: fits are shared
PAIRS = 200
NOISE = [0.05, 0.2, 0.5]


@pytest.fixture
def cache_dir(model_cache) -> Path:
    """Clean embeddings and fitted attack models, shared by every sweep (and the session)."""
    return model_cache


def config_file(folder: Path, cache: Path, **overrides) -> Path:
    return write_config(folder / "embwarden.yaml", source_url=f"sqlite:///{folder}/unused.db", cache=cache,
                        **{**SMALL, **overrides})


# -- utility: paraphrase pairs and recall@10 -----------------------------------------------------
def test_paraphrases_state_the_same_facts_and_the_documents_are_the_auxiliary_corpus():
    pairs = paraphrase_pairs(60, seed=1)
    assert pairs.documents == corpora.synthetic(60, seed=1).texts
    assert len(set(pairs.template_ids)) > 10 and len(PARAPHRASES) == 24
    for query, doc, secrets in zip(pairs.queries, pairs.documents, corpora.synthetic(60, seed=1).secrets,
                                   strict=True):
        assert query != doc
        assert all(value in query for value in secrets.values())   # the same facts, in other words


def test_recall_at_10_is_high_without_a_transform_and_drops_with_heavy_noise(encoder, cache_dir):
    pairs = paraphrase_pairs(PAIRS, seed=1)
    cache = EmbeddingCache(cache_dir / "embeddings")
    queries, documents = cache.encode(encoder, list(pairs.queries)), cache.encode(encoder, list(pairs.documents))
    clean = measure.recall_at_k(queries, documents)
    assert clean.recall > 0.8 and clean.queries == clean.documents == PAIRS
    assert clean.ci_low <= clean.recall <= clean.ci_high
    rng = np.random.default_rng(0)
    noisy = measure.recall_at_k(GaussianNoise(0.5).apply(queries, rng), GaussianNoise(0.5).apply(documents, rng))
    assert noisy.recall < 0.3 and noisy.ci_high < clean.ci_low


# -- the report ----------------------------------------------------------------------------------
def constructed() -> Frontier:
    points = [point(None, 0.0, passes=False, f1=0.6), point(10, 0.9, f1=0.1), point(100, 0.3, f1=0.3),
              point(1000, 0.0, passes=False, failed=[f"{F1}: value 0.55 reaches gate 0.5"], f1=0.55)]
    thresholds = {F1: Levels(warn=0.45, gate=0.5, rollback=0.55)}
    return Frontier(DEP, "v1", "clip_gaussian", "epsilon", tuple(points), 1.0,
                    recommend(points, "clip_gaussian", DEP, ["v1", "v2"]), thresholds, "ledger",
                    ("bow_inversion",), {"dp_audit": "skipped"}, ("a note",), "manual__1", "2026-01-01T00:00:00",
                    200, 60)


def test_the_report_has_the_charts_the_table_and_the_command(tmp_path):
    f = constructed()
    json_path, html_path = render.write(f, tmp_path)
    assert Frontier.from_dict(json.loads(json_path.read_text())) == f
    html = html_path.read_text()
    assert html.count("<svg") == 2    # utility, then the gated metric
    assert "leakage: bow_inversion.token_f1" in html and "utility: retrieval recall@10" in html
    assert 'class="recommended"' in html and 'class="level gate"' in html and 'class="reference"' in html
    assert str(escape(f.recommendation.command)) in html
    assert "clip_gaussian epsilon=100" in f.recommendation.message
    assert "dp_audit skipped" in html and "a note" in html


def constructed_two_kinds() -> Frontier:
    points = [point(None, 0.0, passes=False, f1=0.6), point(100, 0.3, f1=0.3),
              point(1000, 0.0, passes=False, failed=[f"{F1}: value 0.55 reaches gate 0.5"], f1=0.55),
              point(4, 0.2, kind="spectral", f1=0.35), point(16, 0.02, kind="spectral", f1=0.45),
              point(64, 0.0, kind="spectral", passes=False, f1=0.58)]
    kinds = ("clip_gaussian", "spectral")
    return Frontier(DEP, "v1", "clip_gaussian,spectral", "epsilon,keep", tuple(points), 1.0,
                    recommend(points, kinds, DEP, ["v1"]), {F1: Levels(warn=0.45, gate=0.5, rollback=0.55)}, "ledger",
                    ("bow_inversion",), {}, (), "manual__2", "2026-01-01T00:00:00", 200, 60, kinds)


def test_a_frontier_of_two_kinds_groups_its_points_by_kind_one_curve_each(tmp_path):
    f = constructed_two_kinds()
    assert f.params() == {"clip_gaussian": "epsilon", "spectral": "keep"}
    assert [p.label for p in f.points_of("spectral")] == ["spectral keep=4", "spectral keep=16", "spectral keep=64"]
    json_path, html_path = render.write(f, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["kinds"] == ["clip_gaussian", "spectral"] and data["params"]["spectral"] == "keep"
    assert [p["kind"] for p in data["points"]] == ["none", "clip_gaussian", "clip_gaussian", "spectral", "spectral",
                                                   "spectral"]
    assert Frontier.from_dict(data) == f
    html = html_path.read_text()
    # One chart in the utility-leakage plane with a curve per kind, then each kind against its own field.
    tradeoff = html[html.index('class="chart tradeoff"'):]
    tradeoff = tradeoff[:tradeoff.index("</svg>")]
    assert tradeoff.count('class="series"') == 2 and tradeoff.count('class="recommended"') == 1
    assert html.count("<svg") == 1 + 2 * 2
    assert "spectral: leakage and utility against keep" in html and "clip_gaussian: utility" in html
    assert html.count('<tr class="kind">') == 3 and str(escape(f.recommendation.command)) in html
    assert f.recommendation.label == "spectral keep=16"
    # A single-kind frontier keeps its layout, and a frontier.json written before kinds existed still reads.
    single = constructed()
    old = single.to_dict()
    for key in ("kinds", "params"):
        del old[key]
    for p in old["points"]:
        del p["kind"]
    assert Frontier.from_dict(old) == single and single.kinds == ("clip_gaussian",)
    html = render.write(single, tmp_path / "single")[1].read_text()
    assert "tradeoff" not in html and 'class="kind"' not in html


def test_ties_in_similarity_are_broken_at_random_not_counted_as_hits():
    rng = np.random.default_rng(0)
    distinct = rng.standard_normal((50, 8))
    assert measure.recall_at_k(distinct, distinct).recall == 1.0
    collapsed = np.ones((50, 1))   # every output the same: the own document is one of 50 tied
    assert measure.recall_at_k(collapsed, collapsed).recall == pytest.approx(10 / 50)


def test_the_strength_axis_is_logarithmic_when_the_grid_spans_decades():
    pts = [{"x": x, "label": str(x), "value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "passes": True}
           for x in (10, 100, 1000)]
    xs = [float(v) for v in re.findall(r'<circle cx="([\d.]+)"', charts.strength_chart(
        pts, title="t", x_label="eps", log_x=True))]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.2)
    xs = [float(v) for v in re.findall(r'<circle cx="([\d.]+)"', charts.strength_chart(
        pts, title="t", x_label="eps", log_x=False))]
    assert xs[2] - xs[1] > 5 * (xs[1] - xs[0])


# -- a real sweep --------------------------------------------------------------------------------
def test_a_sweep_measures_each_point_and_recommends_one_that_passes_the_gates(ledger, tmp_path, cache_dir, capsys):
    from monitors.ledger.models import Deployment, Threshold
    from monitors.ledger.registry import sync
    from monitors.thresholds import set_threshold

    path = config_file(tmp_path, cache_dir)
    f, json_path, html_path = measure.sweep_and_write(DEP, "gaussian_noise", NOISE, PAIRS, run_id="t1",
                                                      config_path=str(path))

    assert [p.label for p in f.points] == ["no transform"] + [f"gaussian_noise sigma={s:g}" for s in NOISE]
    assert f.thresholds_source == "ledger" and f.thresholds[F1].gate == 0.5
    f1 = [p.scores[F1].value for p in f.points]
    recall = [p.utility.recall for p in f.points]
    assert all(b <= a + 0.05 for a, b in zip(f1[1:], f1[2:], strict=False)), f1    # more noise, less leaks
    assert f1[-1] < f1[1] - 0.2
    assert recall[0] > 0.8 and recall[-1] < recall[0] - 0.5 and f.baseline_utility == recall[0]
    assert all(p.utility_loss == pytest.approx(recall[0] - p.utility.recall) for p in f.points)
    rec = f.recommendation
    chosen = next(p for p in f.points if p.label == rec.label)
    assert chosen.passes_gates and chosen.scores[F1].value < 0.5 and not chosen.baseline
    assert all(p.utility_loss >= chosen.utility_loss for p in f.grid if p.passes_gates)
    assert all(not p.passes_gates and p.failed for p in f.grid if p.scores[F1].value >= 0.5)
    assert rec.command and f"--config {path}" in rec.command
    # The artifacts are the record: under the artifacts root, frontier/<deployment>/<run id>/.
    assert json_path.parent == tmp_path / "artifacts" / "frontier" / DEP / "t1"
    assert Frontier.from_dict(json.loads(json_path.read_text())) == f
    html = html_path.read_text()
    assert "<svg" in html and str(escape(rec.command)) in html
    for text in corpora.canaries(60, 7).texts + paraphrase_pairs(PAIRS, 1).queries:
        assert text not in html and text not in json_path.read_text()
    # Nothing was written to the ledger (the thresholds were read in a rolled-back transaction).
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Deployment)) == 0

    # Thresholds changed by hand in the ledger win over the file: with the gate at 0.99 every point
    # passes, and the weakest noise loses least. The CLI runs that sweep (fits come from the cache).
    config = load_config(path)
    with session_scope() as session:
        sync(session, config)
        set_threshold(session, config, DEP, F1, {"warn": None, "gate": 0.99, "rollback": None}, "tester",
                      "frontier test")
        rows = session.scalar(sa.select(sa.func.count()).select_from(Threshold))
    capsys.readouterr()
    assert cli(["frontier", DEP, "--kind", "gaussian_noise", "--strengths", ",".join(map(str, NOISE)),
                "--pairs", str(PAIRS), "--config", str(path), "--json"]) == 0
    again = Frontier.from_dict(json.loads(capsys.readouterr().out))
    assert again.thresholds[F1] == Levels(gate=0.99)
    assert again.recommendation.label == "gaussian_noise sigma=0.05"
    assert "already pass" in again.recommendation.message
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Threshold)) == rows

    assert cli(["frontier", DEP, "--kind", "gaussian_noise", "--strengths", "0.05,0.5", "--pairs", str(PAIRS),
                "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Recommendation: gaussian_noise sigma=0.05" in out and "embwarden versions add support-search" in out
    assert "no transform" in out and "Report: " in out


def test_a_sweep_of_two_kinds_fits_the_new_one_and_recommends_it_pinned(tmp_path, cache_dir, monkeypatch,
                                                                      pg_admin_url, capsys):
    """gaussian_noise (its fits shared with the sweep above) and spectral, fitted for its point; the file's
    gate at 0.6: no transform fails it, both points pass, spectral keeps more recall."""
    missing = pg_admin_url.set(database="embwarden_no_such_db").render_as_string(hide_password=False)
    monkeypatch.setenv("EMBWARDEN_DB_URL", missing)
    monkeypatch.delenv("AIRFLOW_CONN_EMBWARDEN_DB", raising=False)
    path = config_file(tmp_path, cache_dir, thresholds={F1: {"warn": 0.45, "gate": 0.6}})
    capsys.readouterr()
    assert cli(["frontier", DEP, "--kind", "spectral,gaussian_noise", "--strengths", "gaussian_noise=0.5",
                "--strengths", "spectral=2", "--pairs", "60", "--config", str(path), "--json"]) == 0
    f = Frontier.from_dict(json.loads(capsys.readouterr().out))
    assert f.kinds == ("gaussian_noise", "spectral") and f.kind == "gaussian_noise,spectral"
    assert [p.label for p in f.points] == ["no transform", "gaussian_noise sigma=0.5", "spectral keep=2"]
    assert f.thresholds_source.startswith("configuration file") and not f.points[0].passes_gates
    # The point measured is the fitted transform: its spec pins the artifact, under the artifacts root.
    spectral = f.points[-1]
    artifact = Path(spectral.transform["artifact"])
    assert artifact.parent == tmp_path / "artifacts" / "transforms" / DEP
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == spectral.transform["sha256"]
    assert spectral.utility.recall > f.points[1].utility.recall and spectral.passes_gates, f.points
    rec = f.recommendation
    assert rec.kind == "spectral" and rec.label == "spectral keep=2" and "the best is of kind spectral" in rec.message
    args = shlex.split(rec.command)
    assert json.loads(args[args.index("--transform") + 1]) == spectral.transform == rec.transform
    # The command adds the version as measured: the artifact is verified, not fitted again.
    assert cli(args[1:]) == 0
    assert "verified" in capsys.readouterr().out
    added = load_config(path).deployment(DEP).versions[rec.version].transform
    assert (added.artifact, added.sha256) == (str(artifact), spectral.transform["sha256"])


def test_without_a_ledger_the_file_thresholds_apply_and_skipped_probes_are_named(tmp_path, cache_dir, monkeypatch,
                                                                                pg_admin_url):
    missing = pg_admin_url.set(database="embwarden_no_such_db").render_as_string(hide_password=False)
    monkeypatch.setenv("EMBWARDEN_DB_URL", missing)
    monkeypatch.delenv("AIRFLOW_CONN_EMBWARDEN_DB", raising=False)
    path = config_file(tmp_path, cache_dir)
    config = load_config(path)
    levels, source = measure.gate_thresholds(config, DEP)
    assert levels == {F1: Levels(0.45, 0.5, 0.55)} and source.startswith("configuration file (ledger unavailable")
    # dp_audit and repeat_query are left out of a sweep (and named); with nothing else there is nothing to run.
    only_skipped = config.deployment(DEP).model_copy(update={"probes": {k: {} for k in measure.SKIPPED_PROBES}})
    with pytest.raises(ConfigError, match=r"no probe the sweep can run .*skipped: \['dp_audit', 'repeat_query'\]"):
        measure.sweep(config.model_copy(update={"deployments": {DEP: only_skipped}}), DEP, "gaussian_noise", [0.1],
                       PAIRS)


# -- the DAG, run by Airflow ---------------------------------------------------------------------
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.mark.integration
def test_the_privacy_frontier_dag_sweeps_and_hands_on_references_only(ledger, pg_admin_url, tmp_path, cache_dir):
    path = config_file(tmp_path, cache_dir)
    with migrated_airflow(pg_admin_url, ledger, tmp_path / "airflow", path) as (env, metadata_url):
        conf = {"deployment": DEP, "kind": "gaussian_noise", "strengths": NOISE, "pairs": PAIRS}
        done = subprocess.run([AIRFLOW, "dags", "test", "privacy_frontier", "-c", json.dumps(conf)], env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        meta = sa.create_engine(metadata_url)
        with meta.connect() as conn:
            xcoms = conn.execute(sa.text("SELECT task_id, key, value FROM xcom")).all()
            state = conn.execute(sa.text("SELECT state FROM dag_run WHERE dag_id = 'privacy_frontier'")).scalar()
        meta.dispose()
    assert state == "success"
    assert {x[0] for x in xcoms} == {"sweep"}, xcoms
    [(_, _, value)] = [x for x in xcoms if x[1] == "return_value"]
    ref = json.loads(value) if isinstance(value, str) else value
    assert set(ref) == {"deployment", "kind", "points", "passing", "json", "html", "recommendation", "version",
                        "command"}
    assert ref["points"] == 3 and ref["recommendation"] == "gaussian_noise sigma=0.2"
    html = Path(ref["html"]).read_text()
    assert Path(ref["html"]).parent.parent == tmp_path / "artifacts" / "frontier" / DEP
    assert "<svg" in html and str(escape(ref["command"])) in html
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "airflow").rglob("*.log"))
    haystack = json.dumps([list(map(str, x)) for x in xcoms]) + done.stdout + logs
    for text in corpora.canaries(60, 7).texts[:20] + paraphrase_pairs(PAIRS, 1).queries[:20]:
        assert text not in haystack
    with session_scope() as session:   # the ledger holds nothing new: the artifacts are the record
        from monitors.ledger.models import Deployment

        assert session.scalar(sa.select(sa.func.count()).select_from(Deployment)) == 0


def test_the_frontier_form_refuses_bad_params():
    import copy

    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    dag = DagBag(dag_folder=REPO / "dags" / "privacy_frontier.py").dags["privacy_frontier"]
    params = copy.deepcopy(dag.params)
    good = {"deployment": DEP, "kind": "vmf", "strengths": [300, 1000], "pairs": 300}
    for key, value in good.items():
        params[key] = value
    assert params.validate() == good
    params["strengths"] = None
    assert params.validate()["strengths"] is None
    # Several kinds: a list (the form's multi-select) or a comma-separated string (the API), strengths per kind.
    for key, value in [("kind", ["clip_gaussian", "spectral"]), ("kind", "gaussian_noise,spectral"), ("kind", "all"),
                       ("kind", ["all"]), ("strengths", {"spectral": [4, 16], "vmf": [300]})]:
        changed = copy.deepcopy(params)
        changed[key] = value
        assert changed.validate()[key] == value
    for key, value in [("kind", "none"), ("kind", ["vmf", "none"]), ("kind", []), ("kind", "vmf,,spectral"),
                       ("strengths", ["a"]), ("strengths", [-1]), ("strengths", []), ("strengths", {}),
                       ("strengths", {"nope": [1]}), ("strengths", {"vmf": []}), ("pairs", 10),
                       ("deployment", "Support Search")]:
        with pytest.raises(ParamValidationError, match=f"param {key}"):
            copy.deepcopy(params)[key] = value
    # The form offers exactly the kinds the sweep knows, within its bounds (the DAG file writes them out).
    kind = dag.params.get_param("kind")
    assert kind.value == ["clip_gaussian"]
    assert kind.schema["examples"] == kind.schema["items"]["enum"] == [*grid.KINDS, grid.ALL]
    assert dag.params.get_param("strengths").schema["propertyNames"]["enum"] == list(grid.KINDS)
    pairs = dag.params.get_param("pairs")
    assert (pairs.value, pairs.schema["minimum"], pairs.schema["maximum"]) == (
        grid.DEFAULT_PAIRS, grid.MIN_PAIRS, grid.MAX_PAIRS)
