"""`embwarden`: set up the ledger and look at or change a deployment's state from a shell.

Each sub-command group is a module of monitors.cli with `add_parser(sub)`, which registers its
parser(s) and sets `handler` (args -> exit code); this module only assembles and dispatches them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from audits.errors import EmbwardenError
from monitors.cli import alerts, audit, frontier, gate, init, ledger, serve, status, targets, thresholds, versions

# In `embwarden --help` order.
COMMANDS = (init, ledger, versions, status, thresholds, gate, targets, alerts, serve, audit, frontier)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="embwarden", description=__doc__.split("\n\n")[0])
    top.add_argument("--config", help="configuration file (default: $EMBWARDEN_CONFIG or ./embwarden.yaml)")
    sub = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("airflow-db-not-allowed"):
        # Run by a task (a BashOperator's `embwarden activate`): Airflow 3 hides its metadata database
        # from task processes, and importing airflow would then fail at its settings. embwarden needs
        # only Airflow's connections (here from AIRFLOW_CONN_*), never that database.
        os.environ.setdefault("_AIRFLOW__AS_LIBRARY", "1")
    args = parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "WARNING"), format="%(levelname)s %(message)s")
    try:
        return args.handler(args)
    except EmbwardenError as exc:
        print(f"embwarden: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
