"""`embwarden frontier`: sweep a transform's strength; leakage, retrieval utility, a recommendation."""

from __future__ import annotations

import argparse
import json
import logging

from monitors.cli.args import names, numbers
from monitors.frontier.grid import DEFAULT_PAIRS, KINDS


def add_parser(sub) -> None:
    fr = sub.add_parser("frontier", help="sweep a transform's strength: leakage, retrieval utility, a recommendation")
    fr.add_argument("deployment")
    fr.add_argument("--kind", choices=KINDS,
                    help="the transform to sweep (default: the base version's kind, else clip_gaussian)")
    fr.add_argument("--strengths", type=numbers, metavar="1,10,...",
                    help="epsilon (clip_gaussian, vmf), sigma (gaussian_noise), dimension (random_projection) "
                         "or bits (quantize); default: a grid per kind that spans useless to lossless")
    fr.add_argument("--pairs", type=int, default=DEFAULT_PAIRS,
                    help=f"paraphrase pairs for retrieval recall@10 (default {DEFAULT_PAIRS})")
    fr.add_argument("--base", metavar="VERSION", help="whose encoder (default: the active version)")
    fr.add_argument("--probes", type=names,
                    help="comma-separated probes (default: the deployment's, less dp_audit and repeat_query)")
    fr.add_argument("--json", action="store_true", dest="as_json", help="print frontier.json instead of a table")
    fr.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    fr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitors.frontier.measure import sweep_and_write
    from monitors.frontier.render import table

    logging.getLogger("monitors.frontier").setLevel(logging.INFO)
    result, json_path, html_path = sweep_and_write(args.deployment, args.kind, args.strengths, args.pairs,
                                                   config_path=args.config, probes=args.probes, version=args.base)
    if args.as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(table(result))
    for name, why in result.skipped.items():
        print(f"skipped {name}: {why}")
    for note in result.notes:
        print(note)
    print(f"\nRecommendation: {result.recommendation.message}")
    if result.recommendation.command:
        print(f"Create it with:\n  {result.recommendation.command}")
    print(f"\nReport: {html_path}\nData:   {json_path}")
    return 0
