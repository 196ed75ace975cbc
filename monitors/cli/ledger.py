"""`embwarden migrate` and `embwarden sync`: the ledger's tables, and the configuration mirrored into it."""

from __future__ import annotations

import argparse
import sys

from audits.errors import EmbwardenError
from monitors.config import load_config
from monitors.ledger.database import ledger_url, migrate, safe_url, session_scope
from monitors.ledger.registry import get_deployment, sync


def add_parser(sub) -> None:
    sub.add_parser("migrate", help="create or upgrade the ledger's tables").set_defaults(handler=run_migrate)
    sub.add_parser("sync", help="register the configuration's deployments, versions and thresholds").set_defaults(
        handler=run_sync)


def run_migrate(args: argparse.Namespace) -> int:
    migrate()
    print(f"ledger {safe_url(ledger_url())} is up to date")
    return 0


def run_sync(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with session_scope() as session:
        sync(session, config)
        active = {name: dep.active_version.name for name in config.deployments
                  if (dep := get_deployment(session, name)).active_version is not None}
    print(f"synced {len(config.deployments)} deployment(s)")
    return check_corpora(config, active)


def check_corpora(config, active: dict[str, str]) -> int:
    """Whether each deployment's attacker corpus can be built (a production slice needs its texts)."""
    from monitors import auxiliary_corpus
    from monitors.deployments import build_source

    failed = 0
    for name, version in active.items():
        try:
            auxiliary_corpus.check(config, name, build_source(config, name), version)
        except EmbwardenError as exc:
            print(f"embwarden: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0
