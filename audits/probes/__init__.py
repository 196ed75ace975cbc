"""Probes: one attack each, sklearn-like (`fit` on the auxiliary corpus, `score` on a sample)."""

from __future__ import annotations

from typing import Any

from audits.errors import ConfigError
from audits.probes.attribute_inference import AttributeInference
from audits.probes.bow_inversion import BowInversion
from audits.probes.candidate_inversion import CandidateInversion
from audits.probes.dp_audit import DpAudit
from audits.probes.generative_inversion import GenerativeInversion
from audits.probes.repeat_query import RepeatQuery

PROBES: dict[str, type] = {
    probe.name: probe
    for probe in (BowInversion, CandidateInversion, AttributeInference, GenerativeInversion, RepeatQuery, DpAudit)
}


def make_probe(name: str, params: dict[str, Any] | None = None, seed: int = 0):
    """Build the probe called `name` with its configured parameters."""
    try:
        cls = PROBES[name]
    except KeyError:
        raise ConfigError(f"unknown probe {name!r}; expected one of {sorted(PROBES)}") from None
    try:
        return cls(seed=seed, **(params or {}))
    except TypeError as exc:
        raise ConfigError(f"probe {name}: bad parameters {sorted(params or {})}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"probes.{name}: {exc}") from exc


def metric_ranges() -> dict[str, tuple[float, float | None]]:
    """Every metric a probe reports, as `probe.metric`, with the range of values it can take."""
    return {f"{name}.{metric}": bounds for name, cls in PROBES.items() for metric, bounds in cls.metrics.items()}
