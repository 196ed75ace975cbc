"""`embwarden serve`: the reference embedding service of a deployment, which honours its gate."""

from __future__ import annotations

import argparse

from monitors.cli.args import port


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="run the reference embedding service of a deployment (honours its gate)")
    sv.add_argument("deployment")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=port, default=8000)
    sv.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitors.service.app import serve  # uvicorn and the encoder: only when serving

    serve(args.deployment, host=args.host, port=args.port, config_path=args.config)
    return 0
