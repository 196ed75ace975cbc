"""Fitted transforms of a deployment's versions: what they learn from, where their artifacts go,
and a spec made ready to pin.

A fitted transform (pac_gaussian, spectral on a PCA basis, adversarial) learns its state from the
deployment's auxiliary corpus, public or synthetic text only (`auxiliary_corpus.public_corpus`:
never production text), with its clean encodings through the version's encoder (cached like the
attacker's, under `<cache>/embeddings`). Its artifact is written under
`<artifacts root>/transforms/<deployment>/`, content-keyed (audits.transforms.fitting: the same
fit twice finds the first), and never pruned: a version pins it by SHA-256.

`embwarden versions add` and the frontier fit through `pin`, so a version made from a frontier
recommendation pins the very artifact the sweep measured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from audits.errors import ConfigError
from audits.storage import Location
from audits.transforms.base import FitMaterial
from monitors.config import EmbwardenConfig

log = logging.getLogger(__name__)


def store(config: EmbwardenConfig, deployment: str) -> Location:
    """Where the deployment's fitted artifacts live: `<artifacts root>/transforms/<deployment>/`."""
    from monitors import artifacts

    return artifacts.transforms_dir(config.artifacts_root, deployment)


def material(config: EmbwardenConfig, deployment: str, version: str, encoder=None) -> FitMaterial:
    """What a transform of `version` is fitted on: the deployment's public auxiliary corpus and its
    clean encodings through the version's encoder (`encoder`, when the caller has it built);
    identity = encoder fingerprint + corpus hash, seed = the attacker's (`auditor_seed`)."""
    from audits.corpus import corpus_hash
    from audits.pipeline import EmbeddingCache
    from monitors import auxiliary_corpus
    from monitors.deployments import auditor_seed, build_version_encoder

    encoder = encoder if encoder is not None else build_version_encoder(config, deployment, version)
    texts = tuple(auxiliary_corpus.public_corpus(config, deployment).texts)
    clean = EmbeddingCache(config.cache_root / "embeddings").encode(encoder, list(texts))
    identity = f"{encoder.fingerprint}:{corpus_hash(texts)}-{len(texts)}"
    return FitMaterial(texts, clean, identity, auditor_seed(config, deployment), encoder.encode)


@dataclass(frozen=True)
class Pinned:
    """A transform spec ready to be a version's: `spec` with `artifact` and `sha256` when its kind is
    fitted; `fitted` says whether this call fitted it (or found an identical earlier fit)."""

    spec: dict
    fitted: bool = False

    @property
    def artifact(self) -> str | None:
        return self.spec.get("artifact") or None


class Fitter:
    """Fits the specs of one deployment version, building the material once, on the first spec that needs it."""

    def __init__(self, config: EmbwardenConfig, deployment: str, version: str, encoder=None) -> None:
        self.config, self.deployment, self.version, self.encoder = config, deployment, version, encoder
        self._material: FitMaterial | None = None

    @property
    def material(self) -> FitMaterial:
        if self._material is None:
            self._material = material(self.config, self.deployment, self.version, self.encoder)
        return self._material

    def pin(self, spec: Mapping, where: str) -> Pinned:
        """`spec` as a version would pin it, errors named after `where` (the spec's place in the file).

        Needing a fit (a fitted kind without `artifact`): fitted on the material (or found) and
        returned with `artifact` and `sha256`. Naming an artifact: loaded, so a missing or changed
        one is refused here (a ConfigError naming the field) rather than in the first audit. The
        fit sees the spec with its defaults filled, so that a spec written with or without them
        pins the same artifact.
        """
        from audits.transforms import make_transform, needs_fit
        from audits.transforms.fitting import fit_spec

        configured = validated(spec, where)
        if not needs_fit(configured):
            if configured.get("artifact"):
                verify(configured, where)
            return Pinned(dict(spec))
        try:
            fitted = fit_spec(configured, self.material, store(self.config, self.deployment))
        except (ValueError, TypeError) as exc:   # the kind refused the material (e.g. too few texts)
            raise ConfigError(f"{where}: fitting {configured['kind']} on the auxiliary corpus of "
                              f"{self.deployment} failed: {exc}") from None
        verify(fitted, where)
        make_transform(fitted)
        log.info("%s: %s fitted, artifact %s", where, configured["kind"], fitted["artifact"])
        return Pinned({**spec, "artifact": fitted["artifact"], "sha256": fitted["sha256"]}, True)


def verify(spec: Mapping, where: str) -> None:
    """The artifact `spec` names exists, reads, and has the SHA-256 it pins (kinds load theirs lazily,
    on first use: this reads it now). A ConfigError naming the field otherwise."""
    from audits.transforms import make_transform
    from audits.transforms.fitting import TransformArtifactError, load

    make_transform(dict(spec))   # the parameters are the kind's
    try:
        load(spec["kind"], spec.get("artifact", ""), spec.get("sha256", ""))
    except TransformArtifactError as exc:
        field = "sha256" if "SHA-256" in str(exc) else "artifact"
        raise ConfigError(f"{where}.{field}: {exc}") from None
    except (OSError, ValueError) as exc:   # not a readable .npz
        raise ConfigError(f"{where}.artifact: transform {spec['kind']}: artifact {spec.get('artifact')} "
                          f"cannot be read ({exc})") from None


def validated(spec: Mapping, where: str) -> dict:
    """The spec validated as embwarden.yaml would, its defaults filled (a ConfigError naming `where`)."""
    from pydantic import TypeAdapter, ValidationError

    from monitors.config import TransformConfig, format_errors

    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ConfigError(f"{where}: expected an object with a 'kind', found {spec!r}")
    try:
        return TypeAdapter(TransformConfig).validate_python(dict(spec)).spec()
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_errors(exc)}") from None


def pin(config: EmbwardenConfig, deployment: str, version: str, spec: Mapping, where: str) -> Pinned:
    """`spec` ready to be a version of `deployment` with the encoder of `version` (see Fitter.pin)."""
    return Fitter(config, deployment, version).pin(spec, where)
