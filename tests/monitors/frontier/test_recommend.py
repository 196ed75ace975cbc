"""Judging a frontier's points against the gates, recommending one, and the grid of each kind."""

import json
import shlex

import pytest

from audits.errors import ConfigError
from audits.results import Score
from audits.transforms import make_transform
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
    frontier_parser = cli_parser()._subparsers._group_actions[0].choices["frontier"]
    kind = next(a for a in frontier_parser._actions if a.dest == "kind")
    assert set(kind.choices) == set(grid.KINDS)   # the CLI's choices
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
