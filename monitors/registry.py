"""Deployments, versions and thresholds: the configuration file mirrored into the ledger.

The ledger holds runtime state (which version is active, the gate, thresholds changed by hand);
the file holds declarations. Syncing adds what the file declares and never undoes what happened
since: versions are immutable, and an unchanged `active_version` does not undo a rollback.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import ConfigError, EmbwardenError
from audits.transforms import describe_guarantee, make_transform
from monitors.config import DeploymentConfig, EmbwardenConfig
from monitors.ledger import Action, Deployment, GateEvent, Threshold, Version, utcnow
from monitors.policy import Levels

log = logging.getLogger(__name__)

CONFIG_ACTOR = "embwarden.yaml"


def sync(session: Session, config: EmbwardenConfig) -> None:
    for name, dep_cfg in config.deployments.items():
        sync_deployment(session, name, dep_cfg)


def sync_deployment(session: Session, name: str, cfg: DeploymentConfig) -> Deployment:
    dep = session.scalar(sa.select(Deployment).where(Deployment.name == name))
    if dep is None:
        dep = Deployment(name=name)
        session.add(dep)
        session.flush()
        session.add(GateEvent(deployment_id=dep.id, state="open", reason="deployment registered", actor=CONFIG_ACTOR))
    versions = {v.name: v for v in session.scalars(sa.select(Version).where(Version.deployment_id == dep.id))}
    for vname, vcfg in cfg.versions.items():
        encoder, transform = vcfg.encoder.model_dump(), vcfg.transform.spec()
        existing = versions.get(vname)
        if existing is None:
            versions[vname] = Version(deployment_id=dep.id, name=vname, encoder=encoder, transform=transform,
                                      guarantee=describe_guarantee(make_transform(transform)))
            session.add(versions[vname])
        elif existing.encoder != encoder or existing.transform != transform:
            raise ConfigError(
                f"deployments.{name}.versions.{vname}: versions are immutable, but the file now says "
                f"encoder={encoder} transform={transform} where the ledger has encoder={existing.encoder} "
                f"transform={existing.transform}; add a new version instead"
            )
    session.flush()
    if dep.active_version_id is None or dep.config_active_version != cfg.active_version:
        if dep.active_version_id is not None:
            log.info("%s: the configuration file now names %s as active", name, cfg.active_version)
        dep.active_version_id = versions[cfg.active_version].id
        dep.config_active_version = cfg.active_version
    _sync_thresholds(session, dep, cfg)
    session.flush()
    return dep


def _sync_thresholds(session: Session, dep: Deployment, cfg: DeploymentConfig) -> None:
    """Add a new threshold version when the file's levels differ from the file's last ones.

    Levels set later by hand (CLI, API, UI) stay in force until the file's levels change.
    """
    from monitors.coverage import DEFAULT_THRESHOLDS as COVERAGE_DEFAULTS

    declared = {metric: tcfg.levels() for metric, tcfg in cfg.thresholds.items()}
    # Every deployment is judged on coverage: the file's levels, else the defaults.
    declared = {**{m: lv for m, lv in COVERAGE_DEFAULTS.items() if m not in declared}, **declared}
    for metric, levels in declared.items():
        rows = session.scalars(sa.select(Threshold).where(
            Threshold.deployment_id == dep.id, Threshold.metric == metric).order_by(Threshold.version)).all()
        last_from_file = next((r for r in reversed(rows) if r.author == CONFIG_ACTOR), None)
        if last_from_file and Levels.from_mapping(last_from_file.levels()) == levels:
            continue
        add_threshold(session, dep, metric, levels, rows[-1].version + 1 if rows else 1, CONFIG_ACTOR,
                      "default from the configuration file")


def add_threshold(session: Session, dep: Deployment, metric: str, levels: Levels, version: int, author: str,
                  reason: str) -> Threshold:
    row = Threshold(deployment_id=dep.id, metric=metric, version=version, warn=levels.warn, gate=levels.gate,
                    rollback=levels.rollback, higher_is_worse=levels.higher_is_worse, basis=levels.basis,
                    author=author, reason=reason)
    session.add(row)
    return row


def get_deployment(session: Session, name: str) -> Deployment:
    dep = session.scalar(sa.select(Deployment).where(Deployment.name == name))
    if dep is None:
        raise ConfigError(f"deployment {name!r} is not in the ledger; is it in the configuration file?")
    return dep


def get_version(session: Session, dep: Deployment, name: str) -> Version:
    version = session.scalar(sa.select(Version).where(Version.deployment_id == dep.id, Version.name == name))
    if version is None:
        names = session.scalars(sa.select(Version.name).where(Version.deployment_id == dep.id)).all()
        raise ConfigError(f"deployment {dep.name} has no version {name!r}; it has {sorted(names)}")
    return version


def effective_thresholds(session: Session, dep: Deployment, at: datetime | None = None) -> dict[str, Levels]:
    """The newest version of each metric's thresholds (as they stood at time `at`, if given)."""
    query = sa.select(Threshold).where(Threshold.deployment_id == dep.id)
    if at is not None:
        query = query.where(Threshold.created_at <= at)
    latest: dict[str, Threshold] = {}
    for row in session.scalars(query.order_by(Threshold.metric, Threshold.version)):
        latest[row.metric] = row
    return {metric: Levels.from_mapping(row.levels()) for metric, row in latest.items()}


def gate_state(session: Session, dep: Deployment) -> GateEvent | None:
    return session.scalar(sa.select(GateEvent).where(GateEvent.deployment_id == dep.id)
                          .order_by(GateEvent.id.desc()).limit(1))


def activate(session: Session, deployment: str, version: str, actor: str, reason: str) -> Version:
    """Make `version` active by hand (a deployment of it), recorded as an action."""
    if not reason.strip():
        raise EmbwardenError("activate: a reason is required")
    dep = get_deployment(session, deployment)
    target = get_version(session, dep, version)
    previous = dep.active_version.name if dep.active_version else None
    dep.active_version_id = target.id
    session.add(Action(deployment_id=dep.id, kind="activate", status="done", actor=actor, reason=reason,
                       detail={"from": previous, "to": version}, done_at=utcnow()))
    session.flush()
    return target
