"""Leakage trends on a PostgreSQL ledger: a steady rise below the thresholds earns a warning;
noise, other versions and invalid runs do not."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from monitors.config import load_config
from monitors.ledger.database import session_scope
from monitors.ledger.models import AuditRun, Deployment, Score, Version
from monitors.ledger.registry import sync
from monitors.thresholds import Levels
from monitors.trends import rising, trends_of
from tests.helpers import write_config

LEVELS = {"bow_inversion.token_f1": Levels(warn=0.45, gate=0.5, rollback=0.55)}


def test_rising_needs_a_steady_significant_rise():
    assert rising([0.30, 0.32, 0.33, 0.35, 0.37])[0] == pytest.approx(1.0)
    assert rising([0.30, 0.32, 0.33, 0.35]) is None                       # too few runs to tell
    noise = np.random.default_rng(0).normal(0.3, 0.01, 8)
    assert rising(list(noise)) is None
    assert rising([0.9, 0.8, 0.7, 0.6, 0.5], higher_is_worse=False) is not None
    assert rising([0.9, 0.8, 0.7, 0.6, 0.5]) is None


def add_run(session, dep, version, value: float | None, status: str = "succeeded") -> AuditRun:
    run = AuditRun(dag_id="privacy_audit", run_id=f"r{np.random.default_rng().integers(1 << 30)}",
                   deployment_id=dep.id, version_id=version.id, status=status,
                   verdict=None if status == "succeeded" else "invalid")
    session.add(run)
    session.flush()
    if value is not None:
        session.add(Score(audit_run_id=run.id, task="probe", probe="bow_inversion", metric="token_f1", value=value,
                          ci_low=value - 0.02, ci_high=value + 0.02, n=100))
        session.flush()
    return run


def test_trends_read_this_versions_successful_runs_only(ledger, tmp_path):
    with session_scope() as session:
        sync(session, load_config(write_config(tmp_path / "embwarden.yaml", source_url=ledger)))
        dep = session.scalar(sa.select(Deployment))
        v1, v2 = session.scalars(sa.select(Version).order_by(Version.name)).all()
        for value in (0.30, 0.32):
            add_run(session, dep, v1, value)
        add_run(session, dep, v1, None, status="invalid")                  # no scores, does not count
        add_run(session, dep, v2, 0.99)                                    # another version, does not count
        for value in (0.34, 0.36):
            add_run(session, dep, v1, value)
        current = add_run(session, dep, v1, 0.38)
        session.refresh(current)
        [trend] = trends_of(session, current, LEVELS, {"bow_inversion.token_f1": "pass"})
        assert trend.values == (0.30, 0.32, 0.34, 0.36, 0.38) and trend.tau == pytest.approx(1) and trend.p < 0.05
        assert "rising over the last 5 audits" in trend.describe()
        # Already over a threshold: the verdict says so, the trend adds nothing.
        assert trends_of(session, current, LEVELS, {"bow_inversion.token_f1": "warn"}) == []
