"""`embwarden alerts list | retry`: the alerts not yet delivered, and sending them again."""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from monitors.alerts import UNSENT, deliver_alerts
from monitors.config import load_config
from monitors.ledger.database import session_scope
from monitors.ledger.models import AlertRecord


def add_parser(sub) -> None:
    al = sub.add_parser("alerts", help="alerts not yet delivered: list them, or send them again")
    al.add_argument("alerts_command", choices=["list", "retry"])
    al.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.alerts_command == "retry":
        errors = deliver_alerts(load_config(args.config), unknown=True)
        for error in errors:
            print(f"embwarden: still undelivered: {error}", file=sys.stderr)
        return 1 if errors else 0
    with session_scope() as session:
        unsent = AlertRecord.status.in_((*UNSENT, "sending"))
        for row in session.scalars(sa.select(AlertRecord).where(unsent).order_by(AlertRecord.id)):
            state = ("outcome unknown (the ledger was lost mid-send; `alerts retry` sends it again under the same "
                     "delivery id)" if row.status == "sending" else row.status)
            print(f"alert {row.id} {row.kind} {row.channel} {state} after {row.attempts} attempts: {row.error}")
    return 0
