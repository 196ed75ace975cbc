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
from monitors import init as init_command
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


def status_report(session, name: str) -> list[str]:
    """`embwarden status`: the gate, the active version, and the last audit with its judged scores
    against their levels, the run's id (for `embwarden report`) and its report's path."""
    from monitors.policy import Levels, is_coverage

    dep = get_deployment(session, name)
    gate = gate_state(session, dep)
    state, reason = (gate.state, gate.reason) if gate else ("open", "no gate event recorded")
    lines = [f"{dep.name}: gate {state} ({reason}); active version "
             f"{dep.active_version.name if dep.active_version else 'none'}"]
    last = session.scalar(sa.select(AuditRun).where(AuditRun.deployment_id == dep.id).order_by(AuditRun.id.desc()))
    if last is None:
        return [*lines, "  never audited: trigger the privacy_audit DAG (or wait for its schedule)"]
    when = f"{(last.finished_at or last.started_at):%Y-%m-%d %H:%M} UTC"
    error = f" ({last.error[:200]})" if last.error else ""
    lines.append(f"  last audit: run {last.id} ({last.dag_id}), {when}, version {last.version.name}: "
                 f"{last.verdict or last.status}{error}")
    for score in sorted(last.scores, key=lambda s: s.key):
        levels = (last.thresholds or {}).get(score.key)
        if not levels:
            continue
        judged = Levels.from_mapping(levels)
        level = judged.crossed(judged.judged(score))
        word = ("covered" if level == "pass" else "not covered") if is_coverage(score.key) else level
        lines.append(f"  {score.key} {score.value:.3f} ({_levels(levels)}): {word}")
    lines.append(f"  report: {last.report_path or 'not written yet'} (embwarden report {last.id})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embwarden", description=__doc__)
    parser.add_argument("--config", help="configuration file (default: $EMBWARDEN_CONFIG or ./embwarden.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    init_command.add_parser(sub)
    sub.add_parser("migrate", help="create or upgrade the ledger's tables")
    sub.add_parser("sync", help="register the configuration's deployments, versions and thresholds")
    act = sub.add_parser("activate", help="make a version active (after deploying it)")
    act.add_argument("deployment")
    act.add_argument("version")
    act.add_argument("--reason", required=True)
    st = sub.add_parser("status", help="active version, gate and last audit of each deployment")
    st.add_argument("deployment", nargs="?")
    th = sub.add_parser("thresholds", help="show, change and trace a deployment's thresholds")
    th_sub = th.add_subparsers(dest="thresholds_command", required=True)
    th_show = th_sub.add_parser("show", help="the thresholds in force (or those a past audit run was judged with)")
    th_show.add_argument("deployment")
    th_show.add_argument("--run", type=int, metavar="AUDIT_RUN_ID", help="an audit run id (see `status`)")
    th_set = th_sub.add_parser("set", help="store new levels for a metric, with a reason")
    th_set.add_argument("deployment")
    th_set.add_argument("metric", help="probe.metric, e.g. bow_inversion.token_f1")
    for level in ("warn", "gate", "rollback"):
        th_set.add_argument(f"--{level}", type=_number(level, none=True), default=argparse.SUPPRESS,
                            help=f"the {level} level, or 'none' to remove it (unnamed levels are kept)")
    th_set.add_argument("--lower-is-worse", dest="higher_is_worse", action="store_false", default=argparse.SUPPRESS,
                        help="lower values leak more (kept as in force when not given)")
    th_set.add_argument("--higher-is-worse", dest="higher_is_worse", action="store_true", default=argparse.SUPPRESS,
                        help="higher values leak more")
    th_set.add_argument("--basis", choices=("value", "ci_low", "ci_high"), default=argparse.SUPPRESS,
                        help="value, ci_low (sure leaks only) or ci_high (kept as in force when not given)")
    th_set.add_argument("--reason", required=True)
    th_set.add_argument("--author", default=None, help="who (default: the current user)")
    th_hist = th_sub.add_parser("history", help="every threshold version with who, when, why, old and new")
    th_hist.add_argument("deployment")
    th_hist.add_argument("metric", nargs="?")
    gate = sub.add_parser("gate", help="close or reopen a gate, roll back or forward by hand")
    gate.add_argument("action", choices=["close", "reopen", "rollback", "activate"])
    gate.add_argument("deployment")
    gate.add_argument("--version", help="activate: the version; rollback: default the last that passed")
    gate.add_argument("--reason", required=True)
    al = sub.add_parser("alerts", help="alerts not yet delivered: list them, or send them again")
    al.add_argument("alerts_command", choices=["list", "retry"])
    rp = sub.add_parser("report", help="the path of an audit run's report; --render writes it again")
    rp.add_argument("audit_run_id", type=int, help="the audit run's id (see `status`)")
    rp.add_argument("--render", action="store_true", help="render report.html and report.json again")
    sv = sub.add_parser("serve", help="run the reference embedding service of a deployment (honours its gate)")
    sv.add_argument("deployment")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_port, default=8000)
    au = sub.add_parser("audit", help="probe a model directory on your own texts (pre-deployment check)")
    au.add_argument("--encoder", required=True, help="Hugging Face model directory, or bundled:all-MiniLM-L6-v2")
    au.add_argument("--aux", required=True,
                    help="the attacker's texts: a JSONL or Parquet file, synthetic[:SIZE] (templated PII messages), "
                         "general[:SIZE] (real English from Debian's packages), or several joined by +")
    au.add_argument("--targets", required=True, type=Path, help="texts to attack: JSONL or Parquet")
    au.add_argument("--noise-sigma", type=_number("--noise-sigma"), default=0.0,
                    help="Gaussian noise the pipeline adds (default 0)")
    au.add_argument("--transform", type=_json_object("--transform"), default=None,
                    help="the pipeline's transform as in embwarden.yaml, e.g. "
                         '\'{"kind": "clip_gaussian", "epsilon": 1000}\'')
    au.add_argument("--probes", type=lambda v: tuple(p.strip() for p in v.split(",") if p.strip()),
                    help="comma-separated probes (default: the CPU probes the targets can feed)")
    au.add_argument("--params", type=_json_object("--params"), default=None,
                    help='probe parameters as JSON, e.g. \'{"bow_inversion": {"epochs": 10}}\'')
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--naive", action="store_true", help="train on clean vectors (a noise-unaware attacker)")
    au.add_argument("--cache", type=Path, default=Path(".embwarden/cache"),
                    help="embeddings and fitted attack models are cached here (default .embwarden/cache)")
    au.add_argument("--json", required=True, type=Path, dest="json_out", help="where to write the scores")
    _add_frontier_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.command == "audit" else logging.WARNING,
                        format="%(levelname)s %(message)s")

    try:
        if args.command == "audit":
            return _audit(args)
        if args.command == "init":
            return init_command.run(args)
        if args.command in ("frontier", "versions"):
            return _frontier(args) if args.command == "frontier" else _versions(args)
        if args.command == "migrate":
            migrate()
            print(f"ledger {safe_url(ledger_url())} is up to date")
        elif args.command == "sync":
            config = load_config(args.config)
            with session_scope() as session:
                sync(session, config)
                active = {name: dep.active_version.name for name in config.deployments
                          if (dep := get_deployment(session, name)).active_version is not None}
            print(f"synced {len(config.deployments)} deployment(s)")
            return _check_corpora(config, active)
        elif args.command == "activate":
            with session_scope() as session:
                activate(session, args.deployment, args.version, actor=getpass.getuser(), reason=args.reason)
            print(f"{args.deployment}: {args.version} is now active")
        elif args.command == "thresholds":
            return _thresholds(args)
        elif args.command == "gate":
            from monitors.gates import change

            action = {"close": "close_gate", "reopen": "reopen_gate"}.get(args.action, args.action)
            with session_scope() as session:
                row = change(session, args.deployment, action, args.reason, getpass.getuser(), args.version)
                print(f"{args.deployment}: {action} done {row.detail}; " + status_line(session, args.deployment))
            if row.detail.get("reaudit"):
                print("the active version changed: run privacy_audit for it (the privacy_gate DAG asks for "
                      "that itself)")
        elif args.command == "alerts":
            return _alerts(args)
        elif args.command == "report":
            from monitors.runs import rerender_report

            print(rerender_report(args.audit_run_id, force=args.render, config_path=args.config))
        elif args.command == "serve":
            from monitors.service import serve

            serve(args.deployment, host=args.host, port=args.port, config_path=args.config)
        elif args.command == "status":
            config = load_config(args.config)
            names = [args.deployment] if args.deployment else sorted(config.deployments)
            with session_scope() as session:
                for name in names:
                    print("\n".join(status_report(session, name)))
    except EmbwardenError as exc:
        print(f"embwarden: {exc}", file=sys.stderr)
        return 2
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, found {text!r}")
    return int(text)


def _number(field: str, none: bool = False):
    def parse(text: str) -> float | None:
        if none and text.strip().lower() in ("none", "null"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}: expected a number, found {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{field}: expected a finite number, found {text!r}")
        return value
    return parse


def _thresholds(args) -> int:
    from monitors.thresholds import LEVEL_FIELDS, effective, history, set_threshold

    with session_scope() as session:
        if args.thresholds_command == "set":
            changes = {key: getattr(args, key) for key in LEVEL_FIELDS if hasattr(args, key)}
            change = set_threshold(session, load_config(args.config), args.deployment, args.metric, changes,
                                   args.author or getpass.getuser(), args.reason)
            print(f"{change.deployment} {change.metric} version {change.version}: {_levels(change.new)} "
                  f"(was {_levels(change.old) if change.old else 'unset'}) by {change.author}: {change.reason}")
        elif args.thresholds_command == "show":
            for metric, levels in sorted(effective(session, args.deployment, args.run).items()):
                print(f"{metric}: {_levels(levels)}")
        else:
            for c in history(session, args.deployment, args.metric):
                print(f"{c.created_at:%Y-%m-%d %H:%M:%S} {c.metric} v{c.version} by {c.author}: "
                      f"{_levels(c.old) if c.old else 'unset'} -> {_levels(c.new)}; {c.reason}")
    return 0


def _levels(levels: dict) -> str:
    shown = [f"{k}={levels[k]}" for k in ("warn", "gate", "rollback") if levels.get(k) is not None]
    if not levels.get("higher_is_worse", True):
        shown.append("lower is worse")
    if levels.get("basis", "value") != "value":
        shown.append(f"judged on {levels['basis']}")
    return " ".join(shown)


def _alerts(args) -> int:
    from monitors.ledger import AlertRecord
    from monitors.runs import deliver_alerts

    if args.alerts_command == "retry":
        errors = deliver_alerts(load_config(args.config), unknown=True)
        for error in errors:
            print(f"embwarden: still undelivered: {error}", file=sys.stderr)
        return 1 if errors else 0
    with session_scope() as session:
        unsent = AlertRecord.status.in_(("pending", "failed", "sending"))
        for row in session.scalars(sa.select(AlertRecord).where(unsent).order_by(AlertRecord.id)):
            state = ("outcome unknown (the ledger was lost mid-send; `alerts retry` sends it again under the same "
                     "delivery id)" if row.status == "sending" else row.status)
            print(f"alert {row.id} {row.kind} {row.channel} {state} after {row.attempts} attempts: {row.error}")
    return 0


def _check_corpora(config, active: dict[str, str]) -> int:
    """Whether each deployment's attacker corpus can be built (a production slice needs its texts)."""
    from monitors import attacker
    from monitors.runs import build_source

    failed = 0
    for name, version in active.items():
        try:
            attacker.check(config, name, build_source(config, name), version)
        except EmbwardenError as exc:
            print(f"embwarden: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _audit(args) -> int:
    from monitors import adhoc

    document = adhoc.run(adhoc.AdhocAudit(
        encoder=args.encoder, aux=args.aux, targets=args.targets, noise_sigma=args.noise_sigma,
        transform=args.transform, probes=args.probes, seed=args.seed, params=args.params, cache_dir=args.cache,
        naive=args.naive))
    adhoc.write(document, args.json_out)
    for score in document["scores"]:
        print(f"{score['probe']}.{score['metric']} = {score['value']:.3f} "
              f"[{score['ci_low']:.3f}, {score['ci_high']:.3f}] n={score['n']}")
    coverage = document["coverage"]
    print("coverage: " + ("covered" if coverage["covered"] else "NOT COVERED") + " (" + ", ".join(
        f"{c['metric']} {c['value']:.3f}" for c in coverage["scores"]) + ")")
    if not coverage["covered"]:
        print(f"embwarden: inconclusive: {coverage['explanation']}", file=sys.stderr)
    for probe, why in document["skipped"].items():
        print(f"skipped {probe}: {why}")
    for probe, error in document["errors"].items():
        print(f"embwarden: {probe} failed: {error}", file=sys.stderr)
    print(f"written to {args.json_out}")
    return 1 if document["errors"] else 0



FRONTIER_KINDS = ("clip_gaussian", "vmf", "gaussian_noise", "random_projection", "quantize")  # monitors.frontier.KINDS


def _add_frontier_parsers(sub) -> None:
    fr = sub.add_parser("frontier", help="sweep a transform's strength: leakage, retrieval utility, a recommendation")
    fr.add_argument("deployment")
    fr.add_argument("--kind", choices=FRONTIER_KINDS,
                    help="the transform to sweep (default: the base version's kind, else clip_gaussian)")
    fr.add_argument("--strengths", type=_numbers, metavar="1,10,...",
                    help="epsilon (clip_gaussian, vmf), sigma (gaussian_noise), dimension (random_projection) "
                         "or bits (quantize); default: a grid per kind that spans useless to lossless")
    fr.add_argument("--pairs", type=int, default=500, help="paraphrase pairs for retrieval recall@10 (default 500)")
    fr.add_argument("--base", metavar="VERSION", help="whose encoder (default: the active version)")
    fr.add_argument("--probes", type=lambda v: [p.strip() for p in v.split(",") if p.strip()],
                    help="comma-separated probes (default: the deployment's, less dp_audit and repeat_query)")
    fr.add_argument("--json", action="store_true", dest="as_json", help="print frontier.json instead of a table")
    fr.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ve = sub.add_parser("versions", help="add a version to the configuration file (and register it in the ledger)")
    ve_sub = ve.add_subparsers(dest="versions_command", required=True)
    ve_add = ve_sub.add_parser("add", help="add a version: an encoder (copied) and a transform; refuses a used name")
    ve_add.add_argument("deployment")
    ve_add.add_argument("name")
    ve_add.add_argument("--transform", required=True, type=_json_object("--transform"),
                        help='as in embwarden.yaml, e.g. \'{"kind": "clip_gaussian", "epsilon": 3000}\'')
    ve_add.add_argument("--from", dest="from_version", metavar="VERSION",
                        help="copy this version's encoder (default: the active version's)")
    ve_add.add_argument("--config", default=argparse.SUPPRESS,
                        help="configuration file (default: $EMBWARDEN_CONFIG or ./embwarden.yaml)")


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, found {text!r}") from None


def _json_object(flag: str):
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{flag}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag}: expected a JSON object, found {text!r}")
        return value
    return parse


def _frontier(args) -> int:
    from monitors import frontier

    logging.getLogger("monitors.frontier").setLevel(logging.INFO)
    result, json_path, html_path = frontier.run(args.deployment, args.kind, args.strengths, args.pairs,
                                                config_path=args.config, probes=args.probes, version=args.base)
    if args.as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(frontier.table(result))
    for name, why in result.skipped.items():
        print(f"skipped {name}: {why}")
    for note in result.notes:
        print(note)
    print(f"\nRecommendation: {result.recommendation.message}")
    if result.recommendation.command:
        print(f"Create it with:\n  {result.recommendation.command}")
    print(f"\nReport: {html_path}\nData:   {json_path}")
    return 0


def _versions(args) -> int:
    from audits.transforms import describe_guarantee, make_transform
    from monitors.database import LedgerUnavailable
    from monitors.registry import get_version, sync_deployment
    from monitors.versions import add_version

    added = add_version(args.deployment, args.name, args.transform, args.from_version, args.config)
    print(f"{added.deployment}: version {added.name} added to {added.path} (encoder of {added.encoder_from}, "
          f"transform {json.dumps(added.transform)})")
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


if __name__ == "__main__":
    sys.exit(main())
