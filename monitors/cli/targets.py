"""`embwarden targets sync DEPLOYMENT`: push the deployment's state to its targets again (an MLflow
alias, a CD webhook) after a push failed; and the push that follows each change made by hand."""

from __future__ import annotations

import argparse
import sys

from monitors.config import load_config


def add_parser(sub) -> None:
    ta = sub.add_parser("targets", help="push a deployment's active version and gate to its targets again")
    ta_sub = ta.add_subparsers(dest="targets_command", required=True)
    sync = ta_sub.add_parser("sync", help="retry the newest push that did not reach every target")
    sync.add_argument("deployment")
    sync.set_defaults(handler=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    from monitors.targets import resync

    errors = resync(load_config(args.config), args.deployment)
    if errors is None:
        print(f"{args.deployment}: targets in sync; nothing to push")
        return 0
    return report(args.deployment, errors)


def push_change(deployment: str, action_id: int, config_path: str | None = None) -> int:
    """After a change by hand: tell the targets; 0 when every target took it, else 1 and why."""
    from audits.errors import ConfigError
    from monitors.targets import sync_change

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"embwarden: targets not pushed: {exc}", file=sys.stderr)
        return 1
    if not config.deployment(deployment).targets:
        return 0
    return report(deployment, sync_change(config, action_id))


def report(deployment: str, errors: list[str]) -> int:
    if not errors:
        print(f"{deployment}: pushed to every target")
        return 0
    print(f"embwarden: {deployment}: the ledger changed, but a target is out of sync: {'; '.join(errors)}\n"
          f"retry with `embwarden targets sync {deployment}`", file=sys.stderr)
    return 1
