"""The ledger on real PostgreSQL (and SQLite for the demo): migrations, sync, thresholds, activation."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from audits.errors import ConfigError
from monitors.config import load_config
from monitors.gates import gate_state
from monitors.ledger.database import LedgerUnavailable, migrate, session_scope
from monitors.ledger.models import Action, Base, Deployment, GateEvent, Threshold, Version
from monitors.ledger.registry import sync
from monitors.thresholds import effective_thresholds
from monitors.versions import activate
from tests.conftest import REPO


def assert_schema_matches_models(url):
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_migration_matches_the_models_on_postgres(ledger):
    assert_schema_matches_models(ledger)
    migrate(ledger)  # idempotent


def test_migration_matches_the_models_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    assert_schema_matches_models(url)


def test_unreachable_ledger_is_named():
    with pytest.raises(LedgerUnavailable, match="unreachable") as info:
        migrate("postgresql+psycopg2://postgres:hunter2@127.0.0.1:1/ledger")
    assert "hunter2" not in str(info.value)


@pytest.fixture
def config():
    return load_config(REPO / "embwarden.yaml")


def test_sync_registers_once_and_is_idempotent(ledger, config):
    for _ in range(2):
        with session_scope() as session:
            sync(session, config)
    with session_scope() as session:
        dep = session.scalar(sa.select(Deployment))
        assert dep.active_version.name == "v1"
        assert session.scalar(sa.select(sa.func.count()).select_from(Version)) == 2
        # bow, candidate, attribute, coverage x2
        assert session.scalar(sa.select(sa.func.count()).select_from(Threshold)) == 5
        assert gate_state(session, dep).state == "open"
        assert effective_thresholds(session, dep)["bow_inversion.token_f1"].rollback == 0.6


def test_versions_are_immutable(ledger, config):
    with session_scope() as session:
        sync(session, config)
    changed = config.model_copy(deep=True)
    dep = changed.deployments["support-search"]
    object.__setattr__(dep.versions["v1"].transform, "sigma", 0.01)
    with pytest.raises(ConfigError, match="versions.v1: versions are immutable"), session_scope() as session:
        sync(session, changed)


def test_threshold_versions_and_ledger_changes_win(ledger, config):
    with session_scope() as session:
        sync(session, config)
        dep = session.scalar(sa.select(Deployment))
        session.add(Threshold(deployment_id=dep.id, metric="bow_inversion.token_f1", version=2, warn=0.1, gate=0.2,
                              rollback=None, higher_is_worse=True, author="alice", reason="stricter"))
    with session_scope() as session:
        sync(session, config)  # the file is unchanged: alice's version stays in force
        dep = session.scalar(sa.select(Deployment))
        assert effective_thresholds(session, dep)["bow_inversion.token_f1"].gate == 0.2


def test_unchanged_file_does_not_undo_a_rollback_but_a_changed_one_deploys(ledger, config):
    with session_scope() as session:
        sync(session, config)
        activate(session, "support-search", "v2", actor="ci", reason="deploy")
    with session_scope() as session:
        sync(session, config)
        assert session.scalar(sa.select(Deployment)).active_version.name == "v2"
        assert session.scalar(sa.select(Action)).detail == {"from": "v1", "to": "v2"}
    changed = config.model_copy(deep=True)
    object.__setattr__(changed.deployments["support-search"], "active_version", "v2")
    with session_scope() as session:
        activate(session, "support-search", "v1", actor="ops", reason="roll back by hand")
        sync(session, changed)
        assert session.scalar(sa.select(Deployment)).active_version.name == "v2"


def test_activate_requires_reason_and_known_version(ledger, config):
    from audits.errors import EmbwardenError

    with session_scope() as session:
        sync(session, config)
    with pytest.raises(EmbwardenError, match="reason is required"), session_scope() as session:
        activate(session, "support-search", "v2", actor="x", reason=" ")
    with pytest.raises(ConfigError, match=r"has no version 'v9'; it has \['v1', 'v2'\]"), session_scope() as session:
        activate(session, "support-search", "v9", actor="x", reason="r")
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(GateEvent)) == 1


def test_an_unmigrated_ledger_says_what_to_do(pg_url):
    from monitors.ledger.registry import get_deployment

    with pytest.raises(LedgerUnavailable, match="no embwarden tables: run `embwarden migrate`"):
        with session_scope(pg_url) as session:
            get_deployment(session, "support-search")


def test_a_vanished_ledger_database_is_not_called_unmigrated(pg_url):
    """A database that is gone needs its database back, not `embwarden migrate` (it used to say so)."""
    from monitors.ledger.registry import get_deployment

    gone = sa.engine.make_url(pg_url).set(database="embwarden_no_such_db").render_as_string(hide_password=False)
    with pytest.raises(LedgerUnavailable, match='unreachable: .*"embwarden_no_such_db" does not exist') as info:
        with session_scope(gone) as session:
            get_deployment(session, "support-search")
    assert "migrate" not in str(info.value)
