"""`embwarden versions add` and `embwarden activate`: a new version in the file, and the one deployed."""

from __future__ import annotations

import argparse
import getpass
import json

from monitors.cli.args import json_object
from monitors.ledger.database import session_scope


def add_parser(sub) -> None:
    ve = sub.add_parser("versions", help="add a version to the configuration file (and register it in the ledger)")
    ve.set_defaults(handler=run_add)
    ve_sub = ve.add_subparsers(dest="versions_command", required=True)
    ve_add = ve_sub.add_parser("add", help="add a version: an encoder (copied) and a transform; refuses a used name")
    ve_add.add_argument("deployment")
    ve_add.add_argument("name")
    ve_add.add_argument("--transform", required=True, type=json_object("--transform"),
                        help='as in embwarden.yaml, e.g. \'{"kind": "clip_gaussian", "epsilon": 3000}\'; a fitted kind '
                             '(pac_gaussian, spectral, adversarial) without `artifact` is fitted on the '
                             'auxiliary corpus and stored with its artifact and sha256')
    ve_add.add_argument("--from", dest="from_version", metavar="VERSION",
                        help="copy this version's encoder (default: the active version's)")
    ve_add.add_argument("--config", default=argparse.SUPPRESS,
                        help="configuration file (default: $EMBWARDEN_CONFIG or ./embwarden.yaml)")
    act = sub.add_parser("activate", help="make a version active (after deploying it)")
    act.add_argument("deployment")
    act.add_argument("version")
    act.add_argument("--reason", required=True)
    act.set_defaults(handler=run_activate)


def run_add(args: argparse.Namespace) -> int:
    from audits.transforms import describe_guarantee, make_transform
    from monitors.ledger.database import LedgerUnavailable
    from monitors.ledger.registry import get_version, sync_deployment
    from monitors.versions import add_version

    added = add_version(args.deployment, args.name, args.transform, args.from_version, args.config)
    print(f"{added.deployment}: version {added.name} added to {added.path} (encoder of {added.encoder_from}, "
          f"transform {json.dumps(added.transform)})")
    if added.fitted:
        print(f"{added.transform['kind']} fitted on the auxiliary corpus of {added.deployment} (public text only); "
              f"artifact: {added.transform['artifact']} (sha256 {added.transform['sha256'][:12]}..., pinned by "
              "the version: keep it, retention never prunes it)")
    elif added.transform.get("artifact"):
        print(f"artifact {added.transform['artifact']} verified (sha256 {added.transform['sha256'][:12]}...)")
    try:
        with session_scope() as session:
            dep = sync_deployment(session, added.deployment, added.config.deployment(added.deployment))
            guarantee = get_version(session, dep, added.name).guarantee
        print(f"registered in the ledger; stored guarantee: {guarantee}")
    except LedgerUnavailable as exc:
        print(f"not registered in the ledger ({exc}); `embwarden sync` registers it later. "
              f"Its guarantee: {describe_guarantee(make_transform(added.transform))}")
    print(f"next: audit it, then `embwarden activate {added.deployment} {added.name} --reason ...` once deployed")
    return 0


def run_activate(args: argparse.Namespace) -> int:
    from monitors.cli.targets import push_change
    from monitors.versions import activate

    with session_scope() as session:
        action_id = activate(session, args.deployment, args.version, actor=getpass.getuser(), reason=args.reason).id
    print(f"{args.deployment}: {args.version} is now active")
    return push_change(args.deployment, action_id, args.config)
