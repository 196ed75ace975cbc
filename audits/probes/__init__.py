"""Probes: one attack each, sklearn-like (`fit` on the auxiliary corpus, `score` on a sample).

PROBES below is the registry. The modules here that hold no probe are parts of those that do: base
(the contract), words, bow_stacking (bow_inversion's stacked half), text_decoder (generative_inversion's
decoder) and dp_game (dp_audit's test).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from audits.errors import ConfigError
from audits.params import problems
from audits.probes.attribute_inference import AttributeInference
from audits.probes.base import Probe
from audits.probes.bow_inversion import BowInversion
from audits.probes.candidate_inversion import CandidateInversion
from audits.probes.dp_audit import DpAudit
from audits.probes.generative_inversion import GenerativeInversion
from audits.probes.pac_privacy import PacPrivacy
from audits.probes.repeat_query import RepeatQuery

PROBES: dict[str, type[Probe]] = {
    probe.name: probe
    for probe in (BowInversion, CandidateInversion, AttributeInference, GenerativeInversion, RepeatQuery, DpAudit,
                  PacPrivacy)
}


def make_probe(name: str, params: dict[str, Any] | None = None, seed: int = 0):
    """Build the probe called `name` with its configured parameters."""
    try:
        cls = PROBES[name]
    except KeyError:
        raise ConfigError(f"unknown probe {name!r}; expected one of {sorted(PROBES)}") from None
    if not isinstance(params, dict | None):
        raise ConfigError(f"probes.{name}: expected a mapping of parameters, found {type(params).__name__}")
    if "seed" in (params or {}):
        raise ConfigError(f"probes.{name}.seed: set by the run (from its identity), not configurable")
    try:
        return cls(seed=seed, **(params or {}))
    except ValidationError as exc:
        raise ConfigError("; ".join(f"probes.{name}.{line}" for line in problems(exc, owner=name))) from None
    except (TypeError, ValueError) as exc:  # a check across parameters, named "<parameter>: ..."
        message = str(exc)
        raise ConfigError(f"probes.{name}.{message}" if re.match(r"^\w+: ", message)
                          else f"probes.{name}: {message}") from None


def metric_ranges() -> dict[str, tuple[float, float | None]]:
    """Every metric a probe reports, as `probe.metric`, with the range of values it can take."""
    return {f"{name}.{metric}": bounds for name, cls in PROBES.items() for metric, bounds in cls.metrics.items()}
