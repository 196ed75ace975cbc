"""The grid of a frontier sweep: which transform field each kind sweeps, its default strengths,
and the names and commands of the versions it would make. The one list of sweepable kinds (KINDS).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audits.errors import ConfigError
from monitors.frontier.results import FrontierPoint

DEFAULT_PAIRS = 500      # paraphrase pairs of the utility measure, and their bounds
MIN_PAIRS = 50
MAX_PAIRS = 20_000


@dataclass(frozen=True)
class Knob:
    """The transform field one kind's grid sets, and how to read it."""

    param: str
    defaults: tuple[float, ...]
    weaker_when_larger: bool    # more signal (less privacy) as the value grows
    integer: bool
    axis: str
    short: str


# Measured with all-MiniLM-L6-v2 on 500 paraphrase pairs (recall@10 without transform 1.0; chance
# 0.02): clip_gaussian eps 10: 0.03, 30: 0.04, 100: 0.15, 300: 0.78, 1000 and up: 1.0 (sigma 1.0,
# 0.43, 0.19, 0.097, 0.049); eps 1 (sigma 7.46) is as useless as 10, so the grid starts there.
# vmf eps 100: 0.03, 300: 0.32, 600: 0.94, 1000: 1.0. gaussian_noise sigma <= 0.05: 1.0, 0.1: 0.73,
# 0.2: 0.13, 0.5: 0.04. random_projection d 4: 0.63, 8: 0.85, 16: 0.99, 32 and up: 1.0. quantize
# keeps recall (1 bit: 1.0). Each grid spans useless (or the smallest setting) to lossless, with
# points where the curve bends.
KNOBS: dict[str, Knob] = {
    "clip_gaussian": Knob("epsilon", (10, 100, 300, 1000, 3000, 10000), True, False,
                          "epsilon per query (log scale; larger = less noise)", "eps"),
    "vmf": Knob("epsilon", (100, 300, 600, 1000, 3000, 10000), True, False,
                "epsilon per query (log scale; larger = less noise)", "eps"),
    "gaussian_noise": Knob("sigma", (0.01, 0.02, 0.05, 0.1, 0.2, 0.5), False, False,
                           "sigma per coordinate (log scale; larger = more noise)", "sigma"),
    "random_projection": Knob("dimension", (4, 8, 16, 32, 64, 128), True, True,
                              "output dimension (log scale; larger = more kept)", "d"),
    "quantize": Knob("bits", (1, 2, 4, 8), True, True, "bits per coordinate (larger = more kept)", "bits"),
}


KINDS = tuple(KNOBS)


def knob(kind: str) -> Knob:
    try:
        return KNOBS[kind]
    except KeyError:
        raise ConfigError(f"frontier: kind {kind!r} cannot be swept; expected one of {list(KINDS)}") from None


def grid(kind: str, strengths: Sequence[float] | None = None, base_transform: Mapping | None = None) -> list[dict]:
    """The transform specs of the sweep, ordered by strength value (ascending), each validated.

    Fields other than the swept one (delta, clip_norm, seed) come from the base version's
    transform when it is of the same kind.
    """
    kn = knob(kind)
    values = list(kn.defaults if not strengths else strengths)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"frontier: strengths must be finite numbers, found {v!r}")
        if kn.integer and float(v) != int(v):
            raise ConfigError(f"frontier: {kind}.{kn.param} takes whole numbers, found {v!r}")
    base = {k: v for k, v in dict(base_transform or {}).items() if k != kn.param} \
        if (base_transform or {}).get("kind") == kind else {"kind": kind}
    specs = []
    for v in sorted({int(v) if kn.integer or float(v).is_integer() else float(v) for v in values}):
        spec = {**base, kn.param: v}
        as_configured(spec)   # ConfigError naming the field when a value is out of range
        specs.append(spec)
    return specs


def as_configured(spec: Mapping) -> dict:
    """The transform as a version of it would be configured (validated, defaults filled): the sweep
    builds exactly the transform the created version will have, so the version's first audit
    finds the sweep's fitted attack models in the cache."""
    from pydantic import TypeAdapter, ValidationError

    from monitors.config import TransformConfig, format_errors

    try:
        return TypeAdapter(TransformConfig).validate_python(dict(spec)).spec()
    except ValidationError as exc:
        raise ConfigError(f"frontier: transform {dict(spec)}: {format_errors(exc)}") from None


def label_of(spec: Mapping) -> str:
    kind = spec.get("kind", "none")
    if kind == "none":
        return "no transform"
    kn = KNOBS.get(kind)
    return f"{kind} {kn.param}={_num(spec[kn.param])}" if kn else kind


def _num(v: float) -> str:
    return f"{v:g}"


def strength_rank(point: FrontierPoint, kind: str) -> float:
    """Orders a kind's points from the weakest transform (least noise: smallest rank) to the strongest."""
    if point.strength is None:
        return -math.inf
    return -point.strength if knob(kind).weaker_when_larger else point.strength


def version_name(kind: str, spec: Mapping, existing: Sequence[str] = ()) -> str:
    """A free version name saying what the version is, e.g. `clip_gaussian-eps3000`."""
    kn = knob(kind)
    base = f"{kind}-{kn.short}{_num(spec[kn.param])}".replace("+", "")[:60]
    name, n = base, 2
    while name in existing:
        name, n = f"{base}-{n}", n + 1
    return name


def version_command(deployment: str, name: str, spec: Mapping, from_version: str | None = None,
                    config_path: str | None = None) -> str:
    """The shell command that adds `spec` as version `name` of `deployment`."""
    parts = ["embwarden", "versions", "add", deployment, name, "--transform", json.dumps(dict(spec))]
    if from_version:
        parts += ["--from", from_version]
    if config_path:
        parts += ["--config", str(config_path)]
    return shlex.join(parts)
