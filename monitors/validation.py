"""Sample validation with Great Expectations (core API, run inside the task).

A score computed on a broken sample is worse than none. Each sampled row becomes a row of facts
(id, stored dimension, count of non-finite values, L2 norm, version, created_at), never its
vector or text, and one expectation suite checks them: dimension, finite values, a norm range
consistent with the version's transform, a minimum sample size, freshness, known version ids
and unique ids. The result names each failed expectation with a few failing row ids.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from audits.results import Sample

log = logging.getLogger(__name__)

EXAMPLE_IDS = 5


@dataclass(frozen=True)
class SampleRules:
    """What a valid sample of one version looks like."""

    dimension: int
    norm_range: tuple[float, float]
    min_rows: int
    known_versions: tuple[str, ...]
    max_age: timedelta | None       # the newest row must be younger than this; None: no freshness check
    now: datetime


@dataclass(frozen=True)
class ExpectationResult:
    expectation: str                # GX's name, e.g. expect_column_values_to_be_between
    column: str | None              # the fact it checks: dimension, nonfinite, norm, id, version, created_at
    success: bool
    observed: str | None            # GX's observed value, as text
    unexpected_count: int | None
    unexpected_ids: tuple[str, ...]  # a few failing rows, by id

    def describe(self) -> str:
        what = f"{self.expectation}({self.column})" if self.column else self.expectation
        rows = f" rows {', '.join(self.unexpected_ids)}" if self.unexpected_ids else ""
        count = f"{self.unexpected_count} failing" if self.unexpected_count else f"observed {self.observed}"
        return f"{what}: {count}{rows}"


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    row_count: int
    results: tuple[ExpectationResult, ...]
    seconds: float

    @property
    def failed(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if not r.success)

    def summary(self) -> str:
        if self.success:
            return f"{self.row_count} rows passed {len(self.results)} expectations"
        return "sample failed validation: " + "; ".join(r.describe() for r in self.failed)

    def to_json(self) -> list[dict]:
        return [{**asdict(r), "unexpected_ids": list(r.unexpected_ids)} for r in self.results]


def facts(sample: Sample, versions: tuple[str, ...] | None = None):
    """One row of facts per sampled row: what validation needs and nothing that could leak."""
    import pandas as pd

    vectors = sample.vectors
    finite = np.isfinite(vectors)
    norms = np.linalg.norm(np.where(finite, vectors, 0.0).astype(np.float64), axis=1)
    created = (pd.to_datetime([np.nan if t is None else t for t in sample.created_at], unit="s", utc=True)
               if sample.created_at is not None else pd.NaT)
    return pd.DataFrame({
        "id": list(sample.ids),
        "dimension": np.asarray(sample.dims if sample.dims is not None else [vectors.shape[1]] * len(sample)),
        "nonfinite": (~finite).sum(axis=1),
        "norm": norms,
        "version": list(versions) if versions is not None else [sample.version] * len(sample),
        "created_at": created,
    })


def _suite(rules: SampleRules, with_created_at: bool):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="embwarden_sample")
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="dimension", min_value=rules.dimension,
                                                            max_value=rules.dimension))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="nonfinite", min_value=0, max_value=0))
    low, high = rules.norm_range
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=low, max_value=high))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="id"))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="version", value_set=list(rules.known_versions)))
    if with_created_at and rules.max_age is not None:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="created_at"))
        suite.add_expectation(gxe.ExpectColumnMaxToBeBetween(column="created_at", min_value=rules.now - rules.max_age))
    return suite


def validate(sample: Sample, rules: SampleRules, versions: tuple[str, ...] | None = None) -> ValidationReport:
    """Run the expectation suite on the sample's facts; never raises for a bad sample, reports it."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")   # no telemetry from inside a task
    import great_expectations as gx

    started = time.perf_counter()
    frame = facts(sample, versions)
    with_created_at = sample.created_at is not None and any(t is not None for t in sample.created_at)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]  # GX accepts its dict form
    batch = (context.data_sources.add_pandas("embwarden").add_dataframe_asset("sample")
             .add_batch_definition_whole_dataframe("whole"))
    suite = context.suites.add(_suite(rules, with_created_at))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="sample", data=batch, suite=suite))
    outcome = definition.run(batch_parameters={"dataframe": frame},
                             result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLE_IDS})
    results = []
    for r in outcome.results:
        result = r.result or {}
        index = result.get("partial_unexpected_index_list") or []
        ids = tuple(str(frame["id"].iloc[i]) for i in index[:EXAMPLE_IDS] if isinstance(i, int | np.integer))
        observed = result.get("observed_value")
        results.append(ExpectationResult(
            expectation=r.expectation_config.type, column=r.expectation_config.kwargs.get("column"),
            success=bool(r.success), observed=None if observed is None else str(observed),
            unexpected_count=result.get("unexpected_count"), unexpected_ids=ids))
    report = ValidationReport(bool(outcome.success), len(frame), tuple(results), time.perf_counter() - started)
    log.info("validation of %d rows: %s in %.2f s", len(frame), "passed" if report.success else
             f"{len(report.failed)} expectations failed", report.seconds)
    return report


def rules_for(transform, dimension: int, min_rows: int, known_versions, max_age_hours: float | None,
              norm_range: tuple[float, float] | None = None, now: datetime | None = None) -> SampleRules:
    return SampleRules(dimension=dimension, norm_range=tuple(norm_range or transform.norm_range(dimension)),
                       min_rows=min_rows, known_versions=tuple(sorted(known_versions)),
                       max_age=timedelta(hours=max_age_hours) if max_age_hours else None,
                       now=now or datetime.now(UTC))
