"""Judging a frontier's points against the gates, recommending one, and the grid of each kind."""

import json
import shlex

import pytest

from audits.errors import ConfigError
from audits.results import Score
from audits.transforms import TRANSFORMS, make_transform
from monitors.cli.main import parser as cli_parser
from monitors.frontier import grid
from monitors.frontier.recommend import judge, recommend
from monitors.thresholds import Levels
from tests.monitors.frontier.points import F1, point

DEP = "support-search"


def test_the_passing_point_with_the_smallest_utility_loss_is_recommended():
    points = [point(None, 0.0, passes=False), point(10, 0.9), point(100, 0.4), point(1000, 0.02, passes=False),
              point(300, 0.1)]
    rec = recommend(points, "clip_gaussian", DEP, existing_versions=["v1", "v2"])
    assert rec.label == "clip_gaussian epsilon=300"
    assert rec.transform == {"kind": "clip_gaussian", "epsilon": 300}
    assert rec.utility_loss == 0.1
    assert rec.version == "clip_gaussian-eps300"
    args = shlex.split(rec.command)
    assert args[:5] == ["embwarden", "versions", "add", DEP, "clip_gaussian-eps300"]
    assert json.loads(args[args.index("--transform") + 1]) == rec.transform
    assert "already pass" not in rec.message


def test_a_tie_goes_to_the_weakest_transform():
    # epsilon: larger is weaker; sigma: smaller is weaker.
    rec = recommend([point(None, 0.0), point(3000, 0.0), point(10000, 0.0), point(1000, 0.0)], "clip_gaussian", DEP)
    assert rec.label == "clip_gaussian epsilon=10000"
    assert "already pass" in rec.message    # no transform passes too: the message says so
    noise = [point(s, 0.0, kind="gaussian_noise") for s in (0.02, 0.005, 0.01)]
    assert recommend(noise, "gaussian_noise", DEP).label == "gaussian_noise sigma=0.005"


def test_when_nothing_passes_nothing_is_recommended_and_the_strongest_is_named():
    points = [point(None, 0.0, passes=False),
              point(1000, 0.0, passes=False, failed=[f"{F1}: value 0.6 reaches gate 0.5"]),
              point(10, 0.95, passes=False, failed=[f"{F1}: value 0.52 reaches gate 0.5"])]
    rec = recommend(points, "clip_gaussian", DEP)
    assert rec.label is None and rec.command is None and rec.version is None
    assert "No transform of the grid passes" in rec.message
    assert "clip_gaussian epsilon=10 " in rec.message and "0.52 reaches gate" in rec.message


def test_version_names_do_not_collide():
    spec = {"kind": "clip_gaussian", "epsilon": 3000.0}
    assert grid.version_name("clip_gaussian", spec) == "clip_gaussian-eps3000"
    assert grid.version_name("clip_gaussian", spec, ["clip_gaussian-eps3000"]) == "clip_gaussian-eps3000-2"
    command = grid.version_command(DEP, "x", spec, from_version="v2", config_path="/etc/e w.yaml")
    assert shlex.split(command)[-4:] == ["--from", "v2", "--config", "/etc/e w.yaml"]


def score(value, low=None, high=None, metric="token_f1", probe="bow_inversion"):
    return Score(probe, metric, value, value if low is None else low, value if high is None else high, 100)


@pytest.mark.parametrize(("levels", "value", "passes"), [
    (Levels(warn=0.45, gate=0.5, rollback=0.55), 0.47, True),       # warn does not block
    (Levels(warn=0.45, gate=0.5, rollback=0.55), 0.5, False),       # gate does
    (Levels(rollback=0.55), 0.6, False),                             # rollback does
    (Levels(gate=0.5, basis="ci_low"), 0.52, True),                  # ci_low 0.42: not a sure leak
    (Levels(gate=0.5, basis="ci_high"), 0.45, False),                # ci_high 0.55: a plausible one
    (Levels(gate=0.6, higher_is_worse=False), 0.55, False),          # lower is worse
    (Levels(warn=0.1), 0.9, True),                                   # no blocking level at all
])
def test_a_point_passes_unless_a_score_reaches_gate_or_rollback(levels, value, passes):
    ok, failed = judge({F1: score(value, value - 0.1, value + 0.1)}, {F1: levels}, ["bow_inversion"])
    assert ok is passes
    assert bool(failed) is not passes


def test_thresholds_of_probes_not_swept_are_not_judged_but_a_failed_probe_fails():
    thresholds = {F1: Levels(gate=0.5), "drift.mmd": Levels(gate=0.1), "candidate_inversion.top1": Levels(gate=0.5)}
    assert judge({F1: score(0.2)}, thresholds, ["bow_inversion"]) == (True, ())
    ok, failed = judge({F1: score(0.2)}, thresholds, ["bow_inversion", "candidate_inversion"])
    assert not ok and failed == ("candidate_inversion.top1: not measured (its probe failed)",)


def test_the_grid_has_defaults_per_kind_keeps_the_base_settings_and_refuses_bad_values():
    for kind in grid.KINDS:
        specs = grid.grid(kind)
        values = [s[grid.KNOBS[kind].param] for s in specs]
        assert len(values) >= 4 and values == sorted(values)
    # clip_gaussian's default grid spans useless (sigma ~1 per coordinate) to nearly free (sigma < 0.02)
    sigmas = [make_transform(s).sigma for s in grid.grid("clip_gaussian")]
    assert sigmas[0] > 0.9 and sigmas[-1] < 0.02
    base = {"kind": "clip_gaussian", "epsilon": 2.0, "delta": 1e-6, "clip_norm": 0.5}
    assert grid.grid("clip_gaussian", [300, 30, 300], base) == [
        {"kind": "clip_gaussian", "epsilon": 30.0, "delta": 1e-6, "clip_norm": 0.5},
        {"kind": "clip_gaussian", "epsilon": 300.0, "delta": 1e-6, "clip_norm": 0.5}]
    assert grid.grid("random_projection", [64.0]) == [{"kind": "random_projection", "dimension": 64}]
    assert grid.as_configured({"kind": "vmf", "epsilon": 600}) == {"kind": "vmf", "epsilon": 600.0}
    with pytest.raises(ConfigError, match="whole numbers"):
        grid.grid("quantize", [2.5])
    with pytest.raises(ConfigError, match=r"quantize., .bits.: 0}: bits: Input should be greater than or equal to 1"):
        grid.grid("quantize", [0, 4])
    with pytest.raises(ConfigError, match="cannot be swept"):
        grid.grid("none")


# -- several kinds -------------------------------------------------------------------------------
def test_the_kinds_of_a_sweep_one_several_or_all_in_a_stable_order():
    assert grid.kinds_of(None, "vmf") == ("vmf",)
    assert grid.kinds_of("spectral") == ("spectral",)
    assert grid.kinds_of("spectral, clip_gaussian") == grid.kinds_of(["clip_gaussian", "spectral"]) == (
        "clip_gaussian", "spectral")   # KINDS' order, whatever the order given
    assert {"pac_gaussian", "spectral", "jl_gaussian", "adversarial"} <= set(grid.KINDS)
    assert grid.kinds_of("all") == tuple(k for k in grid.KINDS if k in TRANSFORMS)   # those this install builds
    assert {"clip_gaussian", "spectral", "pac_gaussian"} <= set(grid.kinds_of("all"))
    with pytest.raises(ConfigError, match=r"kind 'spectrall' cannot be swept; expected one of \['clip_gaussian'"):
        grid.kinds_of("clip_gaussian,spectrall")
    with pytest.raises(ConfigError, match="already means every kind"):
        grid.kinds_of(["all", "vmf"])


def test_the_grids_of_several_kinds_and_their_strengths_per_kind():
    specs = grid.grids(("clip_gaussian", "spectral"), {"spectral": [64, 8.0]})
    assert specs["spectral"] == [{"kind": "spectral", "keep": 8}, {"kind": "spectral", "keep": 64}]
    assert [s["epsilon"] for s in specs["clip_gaussian"]] == list(grid.KNOBS["clip_gaussian"].defaults)
    # Every new kind has a default grid of valid specs; jl_gaussian gets a dimension unless its base sets one.
    for kind in ("pac_gaussian", "spectral", "jl_gaussian", "adversarial"):
        assert len(grid.grid(kind)) >= 5
    assert {s["dimension"] for s in grid.grid("jl_gaussian")} == {128}
    base = {"kind": "jl_gaussian", "dimension": 64, "epsilon": 5.0, "seed": 3}
    assert grid.grid("jl_gaussian", [300], base) == [{"kind": "jl_gaussian", "dimension": 64, "epsilon": 300,
                                                      "seed": 3}]
    # A fitted base keeps its settings, not its artifact: every grid spec is fitted afresh.
    fitted = {"kind": "spectral", "keep": 4, "basis": "pca", "artifact": "/a.npz", "sha256": "0" * 64}
    assert grid.grid("spectral", [16], fitted) == [{"kind": "spectral", "keep": 16, "basis": "pca"}]
    assert grid.label_of({"kind": "pac_gaussian", "mi_bits": 30}) == "pac_gaussian mi_bits=30"
    assert grid.version_name("spectral", {"kind": "spectral", "keep": 16}) == "spectral-keep16"


@pytest.mark.parametrize(("kinds", "strengths", "error"), [
    (("clip_gaussian", "spectral"), [100, 1000], "one list of strengths for 2 kinds"),
    (("clip_gaussian",), {"vmf": [100]}, "strengths given for vmf, which is not swept"),
    (("clip_gaussian",), {"nope": [1]}, "kind 'nope' cannot be swept"),
    (("clip_gaussian", "spectral"), {"spectral": [4.5]}, r"spectral\.keep takes whole numbers"),
    (("clip_gaussian", "spectral"), {"spectral": [0]}, r"'keep': 0}: spectral\.keep: Input should be greater"),
    (("pac_gaussian",), {"pac_gaussian": [5000]}, r"mi_bits: Input should be less than or equal to 4096"),
    (("jl_gaussian",), {"jl_gaussian": [float("nan")]}, r"jl_gaussian\.epsilon: strengths must be finite"),
    (("adversarial",), {"adversarial": [-1]}, "privacy_weight: Input should be greater than or equal to 0"),
    (("spectral",), {"spectral": 8}, "spectral: strengths must be a list"),
])
def test_bad_strengths_are_refused_naming_the_kind(kinds, strengths, error):
    with pytest.raises(ConfigError, match=error):
        grid.grids(kinds, strengths)


def test_the_cli_takes_a_kind_list_and_strengths_per_kind():
    from monitors.cli.frontier import strengths_of

    parse = cli_parser().parse_args
    args = parse(["frontier", DEP, "--kind", "clip_gaussian,spectral", "--strengths", "spectral=4,16",
                  "--strengths", "clip_gaussian=1000"])
    assert args.kind == ["clip_gaussian", "spectral"]
    assert strengths_of(args.strengths) == {"spectral": [4.0, 16.0], "clip_gaussian": [1000.0]}
    assert strengths_of(parse(["frontier", DEP, "--strengths", "1,2"]).strengths) == [1.0, 2.0]
    assert parse(["frontier", DEP, "--kind", "all"]).kind == ["all"]
    with pytest.raises(ConfigError, match="one plain list"):
        strengths_of(parse(["frontier", DEP, "--strengths", "1,2", "--strengths", "vmf=3"]).strengths)
    for bad in (["--kind", "clip_gaussian,nope"], ["--strengths", "nope=1,2"], ["--kind", ","]):
        with pytest.raises(SystemExit):
            parse(["frontier", DEP, *bad])


def test_the_frontier_picks_a_new_kind_when_it_is_best():
    clip = [point(s, loss, kind="clip_gaussian", passes=ok) for s, loss, ok in
            [(100, 0.8, True), (1000, 0.1, True), (3000, 0.0, False)]]
    spectral = [point(k, loss, kind="spectral", passes=ok) for k, loss, ok in
                [(4, 0.3, True), (16, 0.02, True), (64, 0.0, False)]]
    baseline = [point(None, 0.0, passes=False)]
    rec = recommend(baseline + clip + spectral, ["clip_gaussian", "spectral"], DEP, ["v1"])
    assert rec.label == "spectral keep=16" and rec.kind == "spectral" and rec.version == "spectral-keep16"
    assert rec.transform == {"kind": "spectral", "keep": 16}
    assert "across 2 kinds (clip_gaussian, spectral); the best is of kind spectral" in rec.message
    args = shlex.split(rec.command)
    assert json.loads(args[args.index("--transform") + 1]) == {"kind": "spectral", "keep": 16}
    # The same points, the old kind better: it is picked (the choice is across kinds, not of the new one).
    better_clip = [point(1000, 0.01, kind="clip_gaussian")]
    assert recommend(baseline + better_clip + spectral, ["clip_gaussian", "spectral"], DEP).kind == "clip_gaussian"


def test_ties_across_kinds_go_to_the_weakest_of_a_kind_then_the_first_kind():
    pts = [point(None, 0.0, passes=False), point(64, 0.0, kind="spectral"), point(16, 0.0, kind="spectral"),
           point(3000, 0.0, kind="jl_gaussian"), point(0.1, 0.0, kind="adversarial"),
           point(0.01, 0.0, kind="adversarial"), point(10000, 0.0, kind="clip_gaussian"),
           point(1000, 0.0, kind="clip_gaussian")]
    kinds = ["spectral", "jl_gaussian", "adversarial", "clip_gaussian"]
    assert recommend(pts, kinds, DEP).label == "clip_gaussian epsilon=10000"      # KINDS' order: clip first
    without_clip = [p for p in pts if p.kind != "clip_gaussian"]
    assert recommend(without_clip, kinds, DEP).label == "spectral keep=64"       # weakest spectral
    only_adv = [p for p in pts if p.kind in ("none", "adversarial")]
    assert recommend(only_adv, kinds, DEP).label == "adversarial privacy_weight=0.01"   # larger is stronger


def test_when_no_kind_passes_the_strongest_of_each_is_named():
    pts = [point(None, 0.0, passes=False),
           point(100, 0.9, passes=False, failed=[f"{F1}: value 0.52 reaches gate 0.5"]),
           point(1000, 0.1, passes=False, failed=[f"{F1}: value 0.6 reaches gate 0.5"]),
           point(2, 0.8, kind="spectral", passes=False, failed=[f"{F1}: value 0.51 reaches gate 0.5"]),
           point(16, 0.0, kind="spectral", passes=False, failed=[f"{F1}: value 0.6 reaches gate 0.5"])]
    rec = recommend(pts, ["clip_gaussian", "spectral"], DEP)
    assert rec.command is None and "even the strongest tried of each kind" in rec.message
    assert "clip_gaussian epsilon=100 " in rec.message and "spectral keep=2 " in rec.message
    assert "0.52 reaches" in rec.message and "0.51 reaches" in rec.message
