"""Fitted transforms' state: arrays learnt from public text, stored as one `.npz` artifact named in the
version's spec by location and SHA-256.

A version is immutable, so its transform must be too: the spec pins the artifact's hash, and a
transform whose artifact is missing or changed refuses to load (TransformArtifactError) rather
than apply something else. Fits are content-keyed (kind, the parameters the fit depends on, the
material's identity, seed): fitting the same thing twice finds the first artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from audits import storage
from audits.errors import ConfigError
from audits.storage import Location
from audits.transforms.base import FitMaterial

log = logging.getLogger(__name__)


class TransformArtifactError(ConfigError):
    """A fitted transform's artifact is missing, unreadable or not the one its spec pins."""


def location_of(artifact: str) -> Location:
    """A spec's artifact string as a location: a local path, or a URL of an object store."""
    if "://" in artifact and not artifact.startswith("file://"):
        from upath import UPath

        return UPath(artifact)
    return storage.as_location(artifact.removeprefix("file://"))


def dumps(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in sorted(arrays.items())})  # type: ignore[arg-type]
    return buffer.getvalue()


def load(kind: str, artifact: str, sha256: str) -> dict[str, np.ndarray]:
    """The arrays of `artifact`, checked against `sha256` (pickles are never allowed)."""
    if not artifact or not sha256:
        raise TransformArtifactError(f"transform {kind}: a fitted transform needs `artifact` and `sha256`; fit it "
                                     "with `embwarden versions add ... --transform` (it fits and fills both) or "
                                     "the frontier")
    data = storage.read_bytes(location_of(artifact))
    if data is None:
        raise TransformArtifactError(f"transform {kind}: artifact {artifact} not found")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise TransformArtifactError(f"transform {kind}: artifact {artifact} has SHA-256 {digest[:12]}..., "
                                     f"the version pins {sha256[:12]}...: it changed since the version was made")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def fit_key(kind: str, params: Mapping, material: FitMaterial, fit_format: int = 1) -> str:
    """The content key of a fit; `fit_format` is the kind's FIT_FORMAT, bumped when its fitting changes,
    so an artifact of an older fit is never reused for a new spec."""
    blob = json.dumps({"kind": kind, "params": dict(params), "material": material.identity, "seed": material.seed,
                       "format": fit_format}, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:20]}"


def fit_spec(spec: Mapping, material: FitMaterial, store: Location) -> dict:
    """`spec` with `artifact` and `sha256` filled: fitted on `material` and written under `store`,
    or found there from an earlier identical fit. A spec that already names an artifact is returned
    as it is; a kind without fitted state too."""
    from audits.transforms import TRANSFORMS

    spec = dict(spec)
    cls: Any = TRANSFORMS.get(spec.get("kind", "none"))
    if not _fitted(cls, spec) or spec.get("artifact"):
        return spec
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    params = {k: spec.get(k, defaults.get(k)) for k in cls.fit_parameters}   # a default stated or not: one fit
    path = storage.as_location(store) / f"{fit_key(cls.name, params, material, getattr(cls, 'FIT_FORMAT', 1))}.npz"
    data = storage.read_bytes(path)
    if data is None:
        log.info("fitting transform %s (%s) on %d texts", cls.name, params, len(material.texts))
        data = dumps(cls.fit(params, material))
        storage.write_bytes(path, data)
    return {**spec, "artifact": str(path), "sha256": hashlib.sha256(data).hexdigest()}


def needs_fit(spec: Mapping) -> bool:
    from audits.transforms import TRANSFORMS

    return _fitted(TRANSFORMS.get(spec.get("kind", "none")), spec) and not spec.get("artifact")


def _fitted(cls, spec: Mapping) -> bool:
    """Whether this spec of `cls` has learnt state (a kind may fit only for some settings: `fits`)."""
    if cls is None or not getattr(cls, "fitted", False):
        return False
    fits = getattr(cls, "fits", None)
    return bool(fits(spec)) if fits else True
