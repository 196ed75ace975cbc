"""`embwarden thresholds show | set | history`: a deployment's thresholds, changed with a reason."""

from __future__ import annotations

import argparse
import getpass

from monitors.cli.args import number
from monitors.cli.status import levels_text
from monitors.config import load_config
from monitors.ledger.database import session_scope
from monitors.thresholds import BASES, LEVEL_FIELDS, LEVELS, effective, history, set_threshold


def add_parser(sub) -> None:
    th = sub.add_parser("thresholds", help="show, change and trace a deployment's thresholds")
    th.set_defaults(handler=run)
    th_sub = th.add_subparsers(dest="thresholds_command", required=True)
    th_show = th_sub.add_parser("show", help="the thresholds in force (or those a past audit run was judged with)")
    th_show.add_argument("deployment")
    th_show.add_argument("--run", type=int, metavar="AUDIT_RUN_ID", help="an audit run id (see `status`)")
    th_set = th_sub.add_parser("set", help="store new levels for a metric, with a reason")
    th_set.add_argument("deployment")
    th_set.add_argument("metric", help="probe.metric, e.g. bow_inversion.token_f1")
    for level in LEVELS:
        th_set.add_argument(f"--{level}", type=number(level, none=True), default=argparse.SUPPRESS,
                            help=f"the {level} level, or 'none' to remove it (unnamed levels are kept)")
    th_set.add_argument("--lower-is-worse", dest="higher_is_worse", action="store_false", default=argparse.SUPPRESS,
                        help="lower values leak more (kept as in force when not given)")
    th_set.add_argument("--higher-is-worse", dest="higher_is_worse", action="store_true", default=argparse.SUPPRESS,
                        help="higher values leak more")
    th_set.add_argument("--basis", choices=BASES, default=argparse.SUPPRESS,
                        help="value, ci_low (sure leaks only) or ci_high (kept as in force when not given)")
    th_set.add_argument("--reason", required=True)
    th_set.add_argument("--author", default=None, help="who (default: the current user)")
    th_hist = th_sub.add_parser("history", help="every threshold version with who, when, why, old and new")
    th_hist.add_argument("deployment")
    th_hist.add_argument("metric", nargs="?")


def run(args: argparse.Namespace) -> int:
    with session_scope() as session:
        if args.thresholds_command == "set":
            changes = {key: getattr(args, key) for key in LEVEL_FIELDS if hasattr(args, key)}
            change = set_threshold(session, load_config(args.config), args.deployment, args.metric, changes,
                                   args.author or getpass.getuser(), args.reason)
            print(f"{change.deployment} {change.metric} version {change.version}: {levels_text(change.new)} "
                  f"(was {levels_text(change.old) if change.old else 'unset'}) by {change.author}: {change.reason}")
        elif args.thresholds_command == "show":
            for metric, levels in sorted(effective(session, args.deployment, args.run).items()):
                print(f"{metric}: {levels_text(levels)}")
        else:
            for c in history(session, args.deployment, args.metric):
                print(f"{c.created_at:%Y-%m-%d %H:%M:%S} {c.metric} v{c.version} by {c.author}: "
                      f"{levels_text(c.old) if c.old else 'unset'} -> {levels_text(c.new)}; {c.reason}")
    return 0
