"""Leakage scores reach a real StatsD receiver through Airflow's own metrics, under their documented
names; with metrics off, or a backend that fails, recording goes on.

Airflow sets its metrics up from `[metrics]` when it is imported, so each emission runs in a fresh
interpreter with its own AIRFLOW_HOME and AIRFLOW__METRICS__* settings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from audits.results import Score
from monitors import score_metrics
from monitors.score_metrics import emit_scores, metric_name

REPO = Path(__file__).resolve().parents[2]
DEP = "support-search"

EMIT = textwrap.dedent("""
    import json, sys
    from audits.results import Score
    from monitors.score_metrics import emit_scores

    scores = [Score(*s) for s in json.loads(sys.argv[2])]
    print("EMITTED", json.dumps(emit_scores(sys.argv[1], scores)))
""")

needs_statsd = pytest.mark.skipif(
    importlib.util.find_spec("statsd") is None,
    reason="the `statsd` client is not installed: Airflow needs apache-airflow[statsd] to send StatsD metrics")


@pytest.fixture
def receiver():
    """A StatsD server's socket: UDP on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def emit(tmp_path: Path, deployment: str, scores: list[tuple], **metrics: str) -> int:
    """emit_scores(deployment, scores) in a fresh interpreter with `[metrics]` set from `metrics`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({f"AIRFLOW__METRICS__{k.upper()}": v for k, v in metrics.items()})
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", EMIT, deployment, json.dumps(scores)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("EMITTED "))
    return json.loads(line.split(" ", 1)[1])


def received(sock: socket.socket, count: int, timeout: float = 5.0) -> list[str]:
    """The `airflow.embwarden.` StatsD lines received until `count` came or nothing more came for `timeout`
    seconds (Airflow sends metrics of its own, e.g. `airflow.serde.load_serializers` when it is imported)."""
    sock.settimeout(timeout)
    lines: list[str] = []
    while len(lines) < count:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        lines += [x for x in data.decode("ascii").splitlines() if x.startswith("airflow.embwarden.")]
    return lines


def statsd(port: int) -> dict[str, str]:
    return {"statsd_on": "True", "statsd_host": "127.0.0.1", "statsd_port": str(port)}


@needs_statsd
def test_scores_reach_statsd_as_gauges(tmp_path, receiver):
    scores = [("bow_inversion", "token_f1", 0.61, 0.55, 0.67, 200),
              ("bow_inversion", "token_f1[Medical records: EU]", 0.7, 0.6, 0.8, 40),
              ("attribute_inference", "advantage", -0.05, -0.1, 0.0, 200)]
    assert emit(tmp_path, DEP, scores, **statsd(receiver.getsockname()[1])) == 3
    # StatsD reads a signed gauge value as a change, so the client sets a negative one from 0.
    assert received(receiver, 4) == [
        "airflow.embwarden.support-search.bow_inversion.token_f1:0.61|g",
        "airflow.embwarden.support-search.bow_inversion.token_f1.segment_Medical_records_EU:0.7|g",
        "airflow.embwarden.support-search.attribute_inference.advantage:0|g",
        "airflow.embwarden.support-search.attribute_inference.advantage:-0.05|g",
    ]


def test_with_metrics_off_nothing_is_sent(tmp_path, receiver):
    # The receiver is configured, but statsd_on keeps its default (False).
    port = str(receiver.getsockname()[1])
    scores = [("bow_inversion", "token_f1", 0.61, 0.55, 0.67, 200)]
    assert emit(tmp_path, DEP, scores, statsd_host="127.0.0.1", statsd_port=port) == 0
    assert received(receiver, 1, timeout=0.5) == []


@needs_statsd
def test_names_airflow_would_reject_do_not_raise_and_block_lists_apply(tmp_path, receiver):
    from airflow.sdk._shared.observability.exceptions import InvalidStatsNameException
    from airflow.sdk._shared.observability.metrics.validators import stat_name_default_handler

    deployment = "eu.support search"   # not a valid deployment name: sanitized all the same
    for raw in (f"embwarden.{deployment}.bow_inversion.token_f1", "embwarden.x." + "p" * 260 + ".token_f1"):
        with pytest.raises(InvalidStatsNameException):
            stat_name_default_handler(raw)
    scores = [("p" * 260, "token_f1", 0.5, 0.4, 0.6, 200),   # too long: left out
              ("bow_inversion", "token_f1[a.b/c]", 0.25, 0.2, 0.3, 30),
              ("bow_inversion", "secret_recovery", 0.1, 0.0, 0.2, 200)]   # blocked by the config
    assert emit(tmp_path, deployment, scores, metrics_block_list="secret_recovery",
                **statsd(receiver.getsockname()[1])) == 1
    assert received(receiver, 2, timeout=0.5) == [
        "airflow.embwarden.eu__support_search.bow_inversion.token_f1.segment_a_b_c:0.25|g"]


def test_names_are_valid_for_airflow():
    from airflow.sdk._shared.observability.metrics.validators import stat_name_default_handler, stat_name_otel_handler

    assert metric_name(DEP, "bow_inversion", "token_f1") == "embwarden.support-search.bow_inversion.token_f1"
    assert metric_name(DEP, "bow_inversion", "token_f1[ x:y ]") == (
        "embwarden.support-search.bow_inversion.token_f1.segment__x_y_")
    assert metric_name(DEP, "p" * 200, "token_f1") is None
    longest = metric_name("d" * 63, "generative_inversion", "secret_recovery[" + "x" * 40 + "]")
    for name in (longest, metric_name("a.b", "bow_inversion", "token_f1[Ärzte: Kliniken/EU]")):
        assert name is not None
        assert stat_name_default_handler(name) == name
        assert stat_name_otel_handler("airflow", name) == f"airflow.{name}"


def test_a_failing_backend_does_not_fail_the_recording(monkeypatch, caplog):
    def refuse(name, value):
        raise OSError("network unreachable")

    scores = [Score("bow_inversion", "token_f1", 0.61, 0.55, 0.67, 200)]
    monkeypatch.setattr(score_metrics, "_airflow_stats", lambda: (SimpleNamespace(gauge=refuse), object()))
    assert emit_scores(DEP, scores) == 0
    assert "bow_inversion.token_f1 (OSError: network unreachable)" in caplog.text

    def broken():
        raise RuntimeError("bad [metrics] config")

    monkeypatch.setattr(score_metrics, "_airflow_stats", broken)
    assert emit_scores(DEP, scores) == 0
    assert "RuntimeError: bad [metrics] config" in caplog.text
