"""Adding a version to a deployment in embwarden.yaml, the file's comments and layout kept.

Versions are immutable, so adding is the only change: an existing name is refused. The file is
edited round-trip (ruamel.yaml), the result validated like any configuration before it replaces
the file, and the replacement is atomic (a temporary file in the same folder, then a rename).

A transform of a fitted kind (pac_gaussian, spectral on a PCA basis, adversarial) given without
an artifact is fitted first, on the deployment's public auxiliary corpus through the copied
encoder (monitors.fitted_transforms), and stored with its `artifact` and `sha256`; one that
names an artifact is loaded, so a missing or changed artifact is refused before the file changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from audits.errors import ConfigError, EmbwardenError
from monitors.config import NAME, EmbwardenConfig, config_path, load_config, rewrite
from monitors.ledger.models import Action, utcnow
from monitors.ledger.registry import get_deployment, get_version


@dataclass(frozen=True)
class AddedVersion:
    path: Path
    deployment: str
    name: str
    transform: dict
    encoder_from: str
    config: EmbwardenConfig
    fitted: bool = False    # the transform was fitted now (its artifact: transform["artifact"])


def add_version(deployment: str, name: str, transform: dict, from_version: str | None = None,
                path: str | Path | None = None) -> AddedVersion:
    """Add version `name` of `deployment` with `transform` and the encoder of `from_version`
    (default: the active version) to the configuration file; returns the validated result."""
    path = Path(path).expanduser().resolve() if path else config_path()
    config = load_config(path)   # the file as it is must be valid before it is changed
    dep_cfg = config.deployment(deployment)
    where = f"deployments.{deployment}.versions"
    if not re.match(NAME, name):
        raise ConfigError(f"{where}: {name!r} is not a valid version name (lower-case letters, digits, '_.-', "
                          "starting with a letter or digit)")
    if name in dep_cfg.versions:
        raise ConfigError(f"{where}: version {name!r} exists already; versions are immutable, choose another name")
    if not isinstance(transform, dict) or "kind" not in transform:
        raise ConfigError(f"{where}.{name}.transform: expected an object with a 'kind', found {transform!r}")
    source = from_version or dep_cfg.active_version
    if source not in dep_cfg.versions:
        raise ConfigError(f"{where}: no version {source!r} to copy the encoder from; it has {sorted(dep_cfg.versions)}")

    from audits.transforms import needs_fit
    from monitors.fitted_transforms import Pinned, pin

    pinned = Pinned(transform)   # another kind: validated with the file below
    if needs_fit(transform) or transform.get("artifact"):
        pinned = pin(config, deployment, source, transform, f"{path}: {where}.{name}.transform")
    text = rewrite.add_version(path.read_text(), deployment, name, source, pinned.spec)
    updated = rewrite.replace_validated(path, text)
    assert updated is not None   # no check given: only an invalid file is refused, with an error
    return AddedVersion(path, deployment, name, updated.deployment(deployment).versions[name].transform.spec(),
                        source, updated, pinned.fitted)


def activate(session: Session, deployment: str, version: str, actor: str, reason: str) -> Action:
    """Make `version` active by hand (a deployment of it), recorded as an action (returned)."""
    if not reason.strip():
        raise EmbwardenError("activate: a reason is required")
    dep = get_deployment(session, deployment)
    target = get_version(session, dep, version)
    previous = dep.active_version.name if dep.active_version else None
    dep.active_version_id = target.id
    action = Action(deployment_id=dep.id, kind="activate", status="done", actor=actor, reason=reason,
                    detail={"from": previous, "to": version}, done_at=utcnow())
    session.add(action)
    session.flush()
    return action
