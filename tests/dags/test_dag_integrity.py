"""Every DAG file imports cleanly, fast, and follows the house rules (tags, retries, docs)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

DAGS = REPO / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=DAGS)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"privacy_audit", "privacy_gate"} <= set(dagbag.dags)


def test_every_dag_has_tags_retries_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for task in dag.tasks:
            if task.task_id not in ("cleanup", "outcome"):   # deletes data / reports the verdicts: not retried
                assert task.retries >= 1, f"{dag_id}.{task.task_id}"


def test_privacy_audit_wiring(dagbag):
    dag = dagbag.dags["privacy_audit"]
    chain = ["deployments", "sample", "validate", "probe_jobs", "probe", "record", "evaluate", "act", "report",
             "cleanup", "outcome"]
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    # After the probes, each step runs whatever became of the others (and skips itself when its
    # deployment's run stopped): one failing probe or deployment must not hold up the rest.
    for task_id in chain[2:]:
        if task_id != "probe":
            assert dag.get_task(task_id).trigger_rule == "all_done", task_id


def test_a_run_that_cannot_judge_ends_failed(dagbag):
    """`outcome` is the last task of both audit DAGs (a leaf: it decides the DAG run's state), runs
    whatever became of the others, and is not retried."""
    for dag_id in ("privacy_audit", "embedding_drift"):
        dag = dagbag.dags[dag_id]
        outcome = dag.get_task("outcome")
        assert "cleanup" in outcome.upstream_task_ids and not outcome.downstream_task_ids, dag_id
        assert outcome.trigger_rule == "all_done" and outcome.retries == 0, dag_id


def test_reaudits_flow_through_one_asset(dagbag):
    """privacy_audit and privacy_gate emit the re-audit Asset that schedules privacy_audit."""
    from monitors.assets import REAUDIT_ASSET

    audit, gate = dagbag.dags["privacy_audit"], dagbag.dags["privacy_gate"]
    assert [a.name for a in audit.get_task("reaudit").outlets] == [REAUDIT_ASSET]
    assert [a.name for a in gate.get_task("reaudit").outlets] == [REAUDIT_ASSET]
    assert audit.timetable.asset_condition.name == REAUDIT_ASSET
    assert audit.timetable.timetable.expression == "0 0 * * *"   # and daily, whatever the events
    assert "reaudit_requests" in audit.get_task("act").downstream_task_ids


@pytest.mark.parametrize("bad", [{"reason": "because"}, {"reason": None}, {"action": "delete"},
                                 {"deployment": "Support Search"}, {"version": 2}])
def test_privacy_gate_form_refuses_bad_params(dagbag, bad):
    """The Params form's JSON schema refuses a missing or short reason, an unknown action, ..."""
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["privacy_gate"].params)
    good = {"deployment": "support-search", "action": "reopen_gate", "version": None,
            "reason": "re-audit of v1 passed, reopening"}
    for key, value in good.items():
        params[key] = value
    assert params.validate() == good
    key, value = next(iter(bad.items()))
    with pytest.raises(ParamValidationError, match=f"param {key}"):
        params[key] = value


def test_dag_files_import_nothing_heavy():
    """Parsing must stay fast: torch, transformers, numpy and our packages load inside tasks only. Airflow
    itself imports `monitors.provider` (a function returning the provider's info, nothing else) at start;
    a DAG that uses the provider's operators loads monitors.provider's modules, and no more."""
    code = ("import sys, runpy; runpy.run_path(sys.argv[1]); "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'numpy', 'pandas', "
            "'sklearn', 'evidently', 'great_expectations', 'audits', 'monitors') "
            "and m != 'monitors' and not m.startswith('monitors.provider')]; print(','.join(heavy))")
    # embwarden's DAGs, and the example of a user's own DAG that imports the provider's operators
    for path in [*DAGS.glob("*.py"), *(DAGS.parent / "docs" / "examples").glob("*.py")]:
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "", f"{path.name} imports {out.stdout.strip()} at parse time"
