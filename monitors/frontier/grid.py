"""The grid of a frontier sweep: which transform field each kind sweeps, its default strengths,
and the names and commands of the versions it would make. The one list of sweepable kinds (KINDS),
whose order is also the stable order a recommendation breaks ties between kinds with.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    fixed: Mapping = field(default_factory=dict)   # other fields a grid spec gets unless the base version sets them


# Measured with all-MiniLM-L6-v2 on 500 paraphrase pairs (recall@10 without transform 1.0; chance
# 0.02): clip_gaussian eps 10: 0.03, 30: 0.04, 100: 0.15, 300: 0.78, 1000 and up: 1.0 (sigma 1.0,
# 0.43, 0.19, 0.097, 0.049); eps 1 (sigma 7.46) is as useless as 10, so the grid starts there.
# vmf eps 100: 0.03, 300: 0.32, 600: 0.94, 1000: 1.0. gaussian_noise sigma <= 0.05: 1.0, 0.1: 0.73,
# 0.2: 0.13, 0.5: 0.04. random_projection d 4: 0.63, 8: 0.85, 16: 0.99, 32 and up: 1.0. quantize
# keeps recall (1 bit: 1.0). Fitted on the synthetic corpus (3,000 texts, seed 1), recall@10 with ties
# broken at random: pac_gaussian mi_bits <= 1: 0.03, 3: 0.05, 10: 0.09, 20: 0.27, 30: 0.46, 45: 0.68,
# 64: 0.87 (retrieval tells one text from thousands: it needs that much information per vector).
# spectral (pca, no epsilon) keep 1: 0.04, 2: 0.20, 4: 0.68, 8: 0.94, 16 and up: 1.0. jl_gaussian
# (dimension 128) eps 10: 0.03, 100: 0.07, 300: 0.36, 600: 0.82, 1000: 0.97, 3000 and up: 1.0.
# adversarial (30 rounds) privacy_weight <= 0.5: the identity, 1.0; 1: 20 directions removed, 1.0;
# 2: 141, 1.0; 3: 200, 0.99; 10: 251, 0.95; 100: 288 (its most): a projection keeps what retrieval
# needs, so its grid spans the identity to its strongest map, never useless (the attacker, not
# recall, tells them apart).
# Each grid spans useless (or the smallest setting) to lossless, with points where the curve bends.
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
    "pac_gaussian": Knob("mi_bits", (1, 10, 30, 64, 128, 256), True, False,
                         "mutual-information budget in bits per query (log scale; larger = less noise)", "mi"),
    "spectral": Knob("keep", (1, 2, 4, 8, 16, 64), True, True,
                     "components kept (log scale; larger = more kept)", "keep"),
    "jl_gaussian": Knob("epsilon", (10, 100, 300, 600, 1000, 3000), True, False,
                        "epsilon per query (log scale; larger = less noise)", "eps", {"dimension": 128}),
    "adversarial": Knob("privacy_weight", (0.5, 1, 2, 3, 10, 100), False, False,
                        "privacy weight of the trained map (log scale; larger = more hidden)", "pw"),
}


KINDS = tuple(KNOBS)
ALL = "all"   # `--kind all`: every kind of KINDS that audits.transforms can build
FITTED_FIELDS = ("artifact", "sha256")   # a fitted transform's pinned state: fitted afresh for every grid spec


def knob(kind: str) -> Knob:
    try:
        return KNOBS[kind]
    except KeyError:
        raise ConfigError(f"frontier: kind {kind!r} cannot be swept; expected one of {list(KINDS)}") from None


def kinds_of(kind: str | Sequence[str] | None, default: str = "clip_gaussian") -> tuple[str, ...]:
    """The kinds a sweep covers, in KINDS order: one kind, a comma-separated list, a list, or `all`
    (every kind audits.transforms can build); None (or empty): `default`. An unknown kind is a
    ConfigError naming it."""
    if kind is None:
        names: list[str] = []
    elif isinstance(kind, str):
        names = [k.strip() for k in kind.split(",") if k.strip()]
    else:
        names = [str(k).strip() for k in kind]
    if ALL in names:
        if len(names) > 1:
            raise ConfigError(f"frontier: kind {ALL!r} already means every kind; found {names}")
        from audits.transforms import TRANSFORMS  # every kind this installation can build

        return tuple(k for k in KINDS if k in TRANSFORMS)
    for name in names or [default]:
        knob(name)
    return tuple(k for k in KINDS if k in (names or [default]))


def grids(kinds: Sequence[str], strengths: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
          base_transform: Mapping | None = None) -> dict[str, list[dict]]:
    """Each kind's grid (see `grid`). `strengths`: a list for a single kind, or a mapping from kind to
    its list (a kind left out sweeps its default grid); a ConfigError names the kind at fault."""
    if strengths is None or (not isinstance(strengths, Mapping) and not len(strengths)):
        per_kind: Mapping[str, Sequence[float]] = {}
    elif isinstance(strengths, Mapping):
        per_kind = strengths
        for name, values in per_kind.items():
            if name not in kinds:
                knob(name)
                raise ConfigError(f"frontier: strengths given for {name}, which is not swept "
                                  f"(kinds: {', '.join(kinds)})")
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise ConfigError(f"frontier: {name}: strengths must be a list of numbers, found {values!r}")
    elif len(kinds) == 1:
        per_kind = {kinds[0]: strengths}
    else:
        raise ConfigError(f"frontier: one list of strengths for {len(kinds)} kinds ({', '.join(kinds)}); give them "
                          "per kind, e.g. --strengths clip_gaussian=1000,3000 --strengths spectral=16,64")
    return {kind: grid(kind, per_kind.get(kind), base_transform) for kind in kinds}


def grid(kind: str, strengths: Sequence[float] | None = None, base_transform: Mapping | None = None) -> list[dict]:
    """The transform specs of the sweep, ordered by strength value (ascending), each validated.

    Fields other than the swept one (delta, clip_norm, seed) come from the base version's
    transform when it is of the same kind (a fitted one's artifact excepted: each grid spec is
    fitted afresh), else the kind's `fixed` fields (jl_gaussian's dimension).
    """
    kn = knob(kind)
    values = list(kn.defaults if not strengths else strengths)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"frontier: {kind}.{kn.param}: strengths must be finite numbers, found {v!r}")
        if kn.integer and float(v) != int(v):
            raise ConfigError(f"frontier: {kind}.{kn.param} takes whole numbers, found {v!r}")
    base = {k: v for k, v in dict(base_transform or {}).items() if k != kn.param and k not in FITTED_FIELDS} \
        if (base_transform or {}).get("kind") == kind else {"kind": kind, **kn.fixed}
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


def strength_rank(point: FrontierPoint, kind: str | None = None) -> float:
    """Orders a kind's points from the weakest transform (least noise: smallest rank) to the strongest
    (`kind`: the point's own by default)."""
    if point.strength is None:
        return -math.inf
    return -point.strength if knob(kind or point.kind).weaker_when_larger else point.strength


def kind_rank(kind: str) -> int:
    """The stable order of kinds (KINDS') a recommendation breaks ties with."""
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


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
