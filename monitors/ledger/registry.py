"""Deployments and versions of the configuration file mirrored into the ledger (thresholds: monitors.thresholds).

The ledger holds runtime state (which version is active, the gate, thresholds changed by hand);
the file holds declarations. Syncing adds what the file declares and never undoes what happened
since: versions are immutable, and an unchanged `active_version` does not undo a rollback.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import ConfigError
from audits.transforms import describe_guarantee, make_transform
from monitors.config import DeploymentConfig, EmbwardenConfig
from monitors.ledger.models import Deployment, GateEvent, Version

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
    from monitors.thresholds import sync_thresholds

    sync_thresholds(session, dep, cfg)
    session.flush()
    return dep


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
