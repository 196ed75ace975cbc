"""Privacy transforms a deployment applies to its encoder's output before storing or sending it.

One module per family: `basic` (noise, DP noise, projection, quantisation: stateless), `pac`
(Auto-PAC Gaussian noise to a mutual-information budget), `spectral` (keep, drop or noise the
components of a fixed orthogonal basis), `jl` (projection then calibrated DP noise), `adversarial`
(a map trained against an inversion attacker). Fitted kinds keep their learnt state in an artifact
pinned by hash (`fitting`). Randomised transforms draw fresh noise on every call; deterministic
ones are fixed per version. `guarantee()` is a DP guarantee or None; a kind with another claim
(PAC) states it in `statement()`; `describe_guarantee` shows either, or "none".
"""

from __future__ import annotations

from audits.transforms.adversarial import Adversarial
from audits.transforms.base import FitMaterial, NoiseModel, Transform
from audits.transforms.basic import (
    AppliedByEncoder,
    ClipGaussian,
    GaussianNoise,
    Identity,
    Quantize,
    RandomProjection,
    VonMisesFisher,
)
from audits.transforms.fitting import TransformArtifactError, fit_spec, needs_fit
from audits.transforms.jl import JlGaussian
from audits.transforms.pac import PacGaussian
from audits.transforms.spectral import Spectral

__all__ = ["Adversarial", "AppliedByEncoder", "ClipGaussian", "FitMaterial", "GaussianNoise", "Identity", "JlGaussian",
           "NoiseModel", "PacGaussian", "Quantize", "RandomProjection", "Spectral", "TRANSFORMS", "Transform",
           "TransformArtifactError", "VonMisesFisher", "describe_guarantee", "fit_spec", "make_transform", "needs_fit"]

TRANSFORMS: dict[str, type] = {t.name: t for t in (GaussianNoise, ClipGaussian, VonMisesFisher, RandomProjection,
                                                   Quantize, PacGaussian, Spectral, JlGaussian, Adversarial)}


def describe_guarantee(transform: Transform) -> str:
    """The guarantee as stored in the ledger and shown in reports: 'none' when there is none."""
    guarantee = transform.guarantee()
    statement = getattr(transform, "statement", None)
    if guarantee is None:
        text = statement() if statement else None
        if not text:
            return "none"
    else:
        text = guarantee.describe()
    return text + (" (applied by the embedding API)" if isinstance(transform, AppliedByEncoder) else "")


def make_transform(spec: dict | None) -> Transform:
    """A transform from its configuration, `{"kind": "clip_gaussian", "epsilon": 2, ...}`."""
    from audits.errors import ConfigError

    params = dict(spec or {})
    kind = params.pop("kind", "none")
    applied_by = params.pop("applied_by", "embwarden")
    if applied_by not in ("embwarden", "encoder"):
        raise ConfigError(f"transform {kind}: applied_by must be 'embwarden' or 'encoder', got {applied_by!r}")
    if kind == "none":
        return Identity()
    if applied_by == "encoder":
        return AppliedByEncoder(make_transform({"kind": kind, **params}))
    try:
        cls = TRANSFORMS[kind]
    except KeyError:
        raise ConfigError(f"unknown transform {kind!r}; expected one of {['none', *sorted(TRANSFORMS)]}") from None
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"transform {kind}: {exc}") from None
