"""`embwarden`: set up the ledger and look at or change a deployment's state from a shell."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path

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
    au = sub.add_parser("audit", help="probe a model directory on your own texts (pre-deployment check)")
    au.add_argument("--encoder", required=True, help="Hugging Face model directory, or bundled:all-MiniLM-L6-v2")
    au.add_argument("--aux", required=True, type=Path, help="the attacker's texts: JSONL or Parquet")
    au.add_argument("--targets", required=True, type=Path, help="texts to attack: JSONL or Parquet")
    au.add_argument("--noise-sigma", type=float, default=0.0, help="Gaussian noise the pipeline adds (default 0)")
    au.add_argument("--probes", type=lambda v: tuple(p.strip() for p in v.split(",") if p.strip()),
                    help="comma-separated probes (default: the CPU probes the targets can feed)")
    au.add_argument("--params", type=json.loads, default=None,
                    help='probe parameters as JSON, e.g. \'{"bow_inversion": {"epochs": 10}}\'')
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--naive", action="store_true", help="train on clean vectors (a noise-unaware attacker)")
    au.add_argument("--cache", type=Path, default=Path(".embwarden/cache"),
                    help="embeddings and fitted attack models are cached here (default .embwarden/cache)")
    au.add_argument("--json", required=True, type=Path, dest="json_out", help="where to write the scores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.command == "audit" else logging.WARNING,
                        format="%(levelname)s %(message)s")

    try:
        if args.command == "audit":
            return _audit(args)
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


def _audit(args) -> int:
    from monitors import adhoc

    document = adhoc.run(adhoc.AdhocAudit(
        encoder=args.encoder, aux=args.aux, targets=args.targets, noise_sigma=args.noise_sigma, probes=args.probes,
        seed=args.seed, params=args.params, cache_dir=args.cache, naive=args.naive))
    adhoc.write(document, args.json_out)
    for score in document["scores"]:
        print(f"{score['probe']}.{score['metric']} = {score['value']:.3f} "
              f"[{score['ci_low']:.3f}, {score['ci_high']:.3f}] n={score['n']}")
    for probe, why in document["skipped"].items():
        print(f"skipped {probe}: {why}")
    for probe, error in document["errors"].items():
        print(f"embwarden: {probe} failed: {error}", file=sys.stderr)
    print(f"written to {args.json_out}")
    return 1 if document["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
