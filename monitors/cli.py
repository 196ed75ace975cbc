"""`embwarden`: set up the ledger and look at or change a deployment's state from a shell."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

import sqlalchemy as sa

from audits.errors import EmbwardenError
from monitors.config import load_config
from monitors.database import ledger_url, migrate, safe_url, session_scope
from monitors.ledger import AuditRun
from monitors.registry import activate, gate_state, get_deployment, sync


def status_line(session, name: str) -> str:
    dep = get_deployment(session, name)
    gate = gate_state(session, dep)
    last = session.scalar(sa.select(AuditRun).where(AuditRun.deployment_id == dep.id).order_by(AuditRun.id.desc()))
    audited = f"last audit: {last.version.name} {last.verdict or last.status}" if last else "never audited"
    return (f"{dep.name}: active={dep.active_version.name if dep.active_version else None} "
            f"gate={gate.state if gate else 'open'} ({gate.reason if gate else ''}); {audited}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embwarden", description=__doc__)
    parser.add_argument("--config", help="configuration file (default: $EMBWARDEN_CONFIG or ./embwarden.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the ledger's tables")
    sub.add_parser("sync", help="register the configuration's deployments, versions and thresholds")
    act = sub.add_parser("activate", help="make a version active (after deploying it)")
    act.add_argument("deployment")
    act.add_argument("version")
    act.add_argument("--reason", required=True)
    st = sub.add_parser("status", help="active version, gate and last audit of each deployment")
    st.add_argument("deployment", nargs="?")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    try:
        if args.command == "migrate":
            migrate()
            print(f"ledger {safe_url(ledger_url())} is up to date")
        elif args.command == "sync":
            config = load_config(args.config)
            with session_scope() as session:
                sync(session, config)
            print(f"synced {len(config.deployments)} deployment(s)")
        elif args.command == "activate":
            with session_scope() as session:
                activate(session, args.deployment, args.version, actor=getpass.getuser(), reason=args.reason)
            print(f"{args.deployment}: {args.version} is now active")
        elif args.command == "status":
            config = load_config(args.config)
            names = [args.deployment] if args.deployment else sorted(config.deployments)
            with session_scope() as session:
                for name in names:
                    print(status_line(session, name))
    except EmbwardenError as exc:
        print(f"embwarden: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
