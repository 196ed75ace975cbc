"""`embwarden frontier`: sweep one or more transform kinds' strength; leakage, retrieval utility, a recommendation."""

from __future__ import annotations

import argparse
import json
import logging

from monitors.cli.args import names, numbers
from monitors.frontier.grid import ALL, DEFAULT_PAIRS, KINDS


def kinds(text: str) -> list[str]:
    """`--kind`: one kind, a comma-separated list, or `all`."""
    given = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in given if k not in (*KINDS, ALL)]
    if not given or unknown:
        raise argparse.ArgumentTypeError(f"unknown kind {', '.join(unknown) or repr(text)}; expected one or more "
                                         f"(comma-separated) of {', '.join(KINDS)}, or {ALL}")
    return given


def strengths(text: str) -> tuple[str | None, list[float]]:
    """`--strengths`: `1,10,...` (one kind swept) or `KIND=1,10,...` (repeat the flag per kind)."""
    kind, _, values = text.rpartition("=")
    if kind and kind.strip() not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown kind {kind.strip()!r} in {text!r}; expected one of "
                                         f"{', '.join(KINDS)}")
    return (kind.strip() or None), numbers(values)


def add_parser(sub) -> None:
    fr = sub.add_parser("frontier", help="sweep transforms' strength: leakage, retrieval utility, a recommendation")
    fr.add_argument("deployment")
    fr.add_argument("--kind", type=kinds, metavar="KIND[,KIND...]|all",
                    help=f"the transform kinds to sweep, comma-separated, or `all` ({', '.join(KINDS)}); the "
                         "recommendation picks across them (default: the base version's kind, else clip_gaussian)")
    fr.add_argument("--strengths", type=strengths, action="append", metavar="[KIND=]1,10,...",
                    help="epsilon (clip_gaussian, vmf, jl_gaussian), sigma (gaussian_noise), dimension "
                         "(random_projection), bits (quantize), mi_bits (pac_gaussian), keep (spectral) or "
                         "privacy_weight (adversarial); with several kinds, one flag per kind as KIND=1,10,...; "
                         "default: a grid per kind that spans useless to lossless")
    fr.add_argument("--pairs", type=int, default=DEFAULT_PAIRS,
                    help=f"paraphrase pairs for retrieval recall@10 (default {DEFAULT_PAIRS})")
    fr.add_argument("--base", metavar="VERSION", help="whose encoder (default: the active version)")
    fr.add_argument("--probes", type=names,
                    help="comma-separated probes (default: the deployment's, less dp_audit and repeat_query)")
    fr.add_argument("--json", action="store_true", dest="as_json", help="print frontier.json instead of a table")
    fr.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    fr.set_defaults(handler=run)


def strengths_of(given: list[tuple[str | None, list[float]]] | None) -> list[float] | dict[str, list[float]] | None:
    """The --strengths flags as the sweep takes them: a list (one plain flag) or a mapping per kind."""
    from audits.errors import ConfigError

    if not given:
        return None
    plain = [values for kind, values in given if kind is None]
    if plain and len(given) > 1:
        raise ConfigError("frontier: --strengths: give one plain list (one kind swept), or one KIND=... per kind")
    if plain:
        return plain[0]
    per_kind: dict[str, list[float]] = {}
    for kind, values in given:
        assert kind is not None   # no plain list among them
        if kind in per_kind:
            raise ConfigError(f"frontier: --strengths: {kind} given twice")
        per_kind[kind] = values
    return per_kind


def run(args: argparse.Namespace) -> int:
    from monitors.frontier.measure import sweep_and_write
    from monitors.frontier.render import table

    logging.getLogger("monitors.frontier").setLevel(logging.INFO)
    result, json_path, html_path = sweep_and_write(args.deployment, args.kind, strengths_of(args.strengths),
                                                   args.pairs, config_path=args.config, probes=args.probes,
                                                   version=args.base)
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
