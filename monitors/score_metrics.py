"""Leakage scores as Airflow metrics, so that existing Grafana/Prometheus dashboards chart and alert on them.

Each score the ledger records is also set as a gauge through Airflow's own metrics: the Task SDK's
`stats` (airflow/sdk/_shared/observability/metrics/stats.py, what the task runner itself reports
`ti.start` and `task.duration` with), which sends to StatsD, DogStatsD or OpenTelemetry as `[metrics]`
enables them (`statsd_on`, `statsd_datadog_enabled`, `otel_on`) and applies `metrics_allow_list`,
`metrics_block_list` and `stat_name_handler`. Nothing is sent when no backend is on, nor when StatsD is
on without its client (`statsd`, Airflow's `statsd` extra): Airflow then logs an error. OpenTelemetry goes
the same way: only Airflow's config differs.

Names: `embwarden.<deployment>.<probe>.<metric>`, e.g. `embwarden.support-search.bow_inversion.token_f1`.
Airflow puts its prefix in front (`statsd_prefix` or `otel_prefix`, `airflow` by default), so the series
is `airflow.embwarden.support-search.bow_inversion.token_f1`. Airflow accepts only ASCII letters,
digits and `_ . - /` (its `stat_name_default_handler`), and `.` separates a name's levels, so:

- a segment's score `token_f1[Medical records: EU]` becomes `token_f1.segment_Medical_records_EU`:
  each run of characters other than letters, digits, `_` and `-` becomes one `_` (case kept);
- a `.` in a deployment name becomes `__` (as Airflow does for dotted values in its own names), so the
  deployment stays one level; other characters outside `[A-Za-z0-9_-]` become `_`, as in probes and metrics;
- a name is at most MAX_NAME_LENGTH characters, so that with a prefix of up to 54 characters it keeps
  within both StatsD's limit (250, without the prefix) and OpenTelemetry's (255, with it); a longer one
  is not sent (logged), nor is a second score that maps to a name already sent, nor a non-finite value.

Only the value is sent (no tags: with `statsd_influxdb_enabled` tags would change the name, and the
interval is in the ledger and the report). A gauge keeps the last value set, so sending the same run's
scores again (a retried `record`) is harmless. Emitting never fails the caller: an error of the metrics
backend is logged, with names and counts only, and swallowed.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Protocol

log = logging.getLogger("monitors.score_metrics")

ROOT = "embwarden"
MAX_NAME_LENGTH = 200
_INVALID = re.compile(r"[^A-Za-z0-9_-]+")


class ScoreLike(Protocol):
    """What is read of a score: audits.results.Score or a ledger row (metric may be `metric[segment]`)."""

    @property
    def probe(self) -> str: ...

    @property
    def metric(self) -> str: ...

    @property
    def value(self) -> float: ...


def _part(text: str) -> str:
    return _INVALID.sub("_", text) or "_"


def metric_name(deployment: str, probe: str, metric: str) -> str | None:
    """The gauge's name (before Airflow's prefix) of one score; None when it would be too long."""
    segment = None
    if metric.endswith("]") and "[" in metric:
        metric, segment = metric[:-1].split("[", 1)
    parts = [ROOT, _part(deployment.replace(".", "__")), _part(probe), _part(metric)]
    if segment is not None:
        parts.append("segment_" + _part(segment))
    name = ".".join(parts)
    return name if len(name) <= MAX_NAME_LENGTH else None


def _airflow_stats() -> tuple[ModuleType, Any] | None:
    """Airflow's Task SDK stats, set up from `[metrics]`, and its backend; None when no backend is active."""
    # The task runner (airflow/sdk/execution_time/task_runner.py: main) and the import of
    # airflow.sdk.serde initialize it; outside a task (CLI, tests) it may not be yet.
    from airflow.sdk._shared.observability.metrics import stats
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger

    if stats._factory is None:
        from airflow.sdk.configuration import conf
        from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

        stats.initialize(factory=get_stats_factory(),
                         export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True))
    backend = stats._get_backend()
    # Metrics off, or on without their client (e.g. `statsd` not installed: Airflow logs why).
    return None if isinstance(backend, NoStatsLogger) else (stats, backend)


def emit_scores(deployment: str, scores: Iterable[ScoreLike]) -> int:
    """Set a gauge per score (see the module's docstring for the names); how many were sent to Airflow's
    metrics backend: 0 when metrics are off, not counting those `metrics_allow_list` or
    `metrics_block_list` leave out. Never raises."""
    try:
        scores = list(scores)
        if not scores:
            return 0
        active = _airflow_stats()
    except Exception as exc:  # metrics must never fail the recording
        log.warning("%s: leakage scores not sent as Airflow metrics (%s: %s)", deployment,
                    type(exc).__name__, exc)
        return 0
    if active is None:
        return 0
    stats, backend = active
    listed = getattr(backend, "metrics_validator", None)   # [metrics] allow or block list
    sent: set[str] = set()
    unlisted = 0
    skipped: list[str] = []
    failed: list[str] = []
    for score in scores:
        key = f"{getattr(score, 'probe', '?')}.{getattr(score, 'metric', '?')}"
        try:
            name = metric_name(deployment, score.probe, score.metric)
            value = float(score.value)
            if name is None or name in sent or not math.isfinite(value):
                skipped.append(key)
                continue
            if listed is not None and not listed.test(name):
                unlisted += 1
                continue
            stats.gauge(name, value)
            sent.add(name)
        except Exception as exc:
            failed.append(f"{key} ({type(exc).__name__}: {exc})")
    if skipped:
        log.warning("%s: %d scores not sent as Airflow metrics (name over %d characters, a segment's name "
                    "taken by another, or a non-finite value): %s", deployment, len(skipped), MAX_NAME_LENGTH,
                    ", ".join(skipped))
    if failed:
        log.warning("%s: %d scores not sent as Airflow metrics: %s", deployment, len(failed), "; ".join(failed))
    log.info("%s: %d leakage scores sent as Airflow metrics%s", deployment, len(sent),
             f", {unlisted} left out by [metrics] metrics_allow_list/metrics_block_list" if unlisted else "")
    return len(sent)
