"""`embwarden status` and `embwarden report`: a deployment's gate, active version and last audit."""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from monitors.assets import AUDIT_DAG, DRIFT_DAG
from monitors.config import load_config
from monitors.gates import status_of
from monitors.ledger.database import session_scope
from monitors.ledger.models import AuditRun
from monitors.ledger.registry import get_deployment
from monitors.targets import out_of_sync
from monitors.thresholds import Levels, is_coverage


def add_parser(sub) -> None:
    st = sub.add_parser("status", help="active version, gate and last audit of each deployment")
    st.add_argument("deployment", nargs="?")
    st.set_defaults(handler=run_status)
    rp = sub.add_parser("report", help="the path of an audit run's report; --render writes it again")
    rp.add_argument("audit_run_id", type=int, help="the audit run's id (see `status`)")
    rp.add_argument("--render", action="store_true", help="render report.html and report.json again")
    rp.set_defaults(handler=run_report)


def run_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = [args.deployment] if args.deployment else sorted(config.deployments)
    with session_scope() as session:
        for name in names:
            print("\n".join(status_report(session, name)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from monitors.reports.audit_report import rerender_report

    print(rerender_report(args.audit_run_id, force=args.render, config_path=args.config))
    return 0


# The deployment's own audits and drift checks; a candidate judged before deploy (its DAG's own id) is not
# the deployed version's last audit.
CHECKS = (AUDIT_DAG, DRIFT_DAG)


def status_line(session, name: str) -> str:
    dep = get_deployment(session, name)
    gate = status_of(session, dep)
    last = session.scalar(sa.select(AuditRun).where(AuditRun.deployment_id == dep.id, AuditRun.dag_id.in_(CHECKS))
                          .order_by(AuditRun.id.desc()))
    audited = f"last audit: {last.version.name} {last.verdict or last.status}" if last else "never audited"
    sync = out_of_sync(session, dep)
    unsynced = f"; {sync.summary()}" if sync is not None and not sync.in_sync else ""
    return f"{dep.name}: active={gate.active_version} gate={gate.state} ({gate.reason}); {audited}{unsynced}"


def status_report(session, name: str) -> list[str]:
    """The gate, the active version, and the last audit with its judged scores against their levels,
    the run's id (for `embwarden report`) and its report's path."""
    dep = get_deployment(session, name)
    gate = status_of(session, dep)
    lines = [f"{dep.name}: gate {gate.state} ({gate.reason}); active version {gate.active_version or 'none'}"]
    sync = out_of_sync(session, dep)
    if sync is not None and not sync.in_sync:
        lines.append(f"  {sync.summary()}; retry: embwarden targets sync {dep.name}")
    last = session.scalar(sa.select(AuditRun).where(AuditRun.deployment_id == dep.id, AuditRun.dag_id.in_(CHECKS))
                          .order_by(AuditRun.id.desc()))
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
        lines.append(f"  {score.key} {score.value:.3f} ({levels_text(levels)}): {word}")
    lines.append(f"  report: {last.report_path or 'not written yet'} (embwarden report {last.id})")
    return lines


def levels_text(levels: dict) -> str:
    """`warn=0.2 gate=0.5 lower is worse judged on ci_low`: a threshold's levels in one line."""
    shown = [f"{k}={levels[k]}" for k in ("warn", "gate", "rollback") if levels.get(k) is not None]
    if not levels.get("higher_is_worse", True):
        shown.append("lower is worse")
    if levels.get("basis", "value") != "value":
        shown.append(f"judged on {levels['basis']}")
    return " ".join(shown)
