"""`embwarden gate close | reopen | rollback | activate`: change a gate or version by hand, with a reason."""

from __future__ import annotations

import argparse
import getpass

from monitors.cli.status import status_line
from monitors.cli.targets import push_change
from monitors.gates import change
from monitors.ledger.database import session_scope


def add_parser(sub) -> None:
    gate = sub.add_parser("gate", help="close or reopen a gate, roll back or forward by hand")
    gate.add_argument("action", choices=["close", "reopen", "rollback", "activate"])
    gate.add_argument("deployment")
    gate.add_argument("--version", help="activate: the version; rollback: default the last that passed")
    gate.add_argument("--reason", required=True)
    gate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    action = {"close": "close_gate", "reopen": "reopen_gate"}.get(args.action, args.action)
    with session_scope() as session:
        row = change(session, args.deployment, action, args.reason, getpass.getuser(), args.version)
        print(f"{args.deployment}: {action} done {row.detail}; " + status_line(session, args.deployment))
        action_id = row.id
    if row.detail.get("reaudit"):
        print("the active version changed: run privacy_audit for it (the privacy_gate DAG asks for that itself)")
    return push_change(args.deployment, action_id, args.config)
