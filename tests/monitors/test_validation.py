"""Sample validation with real Great Expectations on generated samples: a clean sample passes,
each broken one fails with the right expectation named and the failing rows' ids."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from audits.results import Sample
from audits.transforms import GaussianNoise, Identity
from monitors.validation import rules_for, validate

DIM = 384


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clean_sample(n: int = 300, sigma: float = 0.05, seed: int = 0) -> Sample:
    vectors = GaussianNoise(sigma).apply(unit_vectors(n, seed), np.random.default_rng(seed + 1))
    now = time.time()
    return Sample(ids=tuple(str(i) for i in range(n)), vectors=vectors, texts=None, version="v1",
                  dims=(DIM,) * n, created_at=tuple(now - 3600 * (i % 24) for i in range(n)))


RULES = rules_for(GaussianNoise(0.05), DIM, min_rows=100, known_versions=["v1", "v2"], max_age_hours=48)


def failed(report) -> set[str]:
    return {f"{r.expectation}({r.column})" if r.column else r.expectation for r in report.failed}


def test_a_clean_sample_passes_every_expectation():
    report = validate(clean_sample(), RULES)
    assert report.success, report.summary()
    assert len(report.results) == 8 and report.row_count == 300


def with_rows(sample: Sample, **changes) -> Sample:
    return replace(sample, **changes)


def broken_cases():
    s = clean_sample()
    nan = s.vectors.copy()
    nan[17, 3] = np.nan
    dims = list(s.dims)
    dims[5] = 768
    ids = list(s.ids)
    ids[9] = ids[8]
    old = tuple(t - 10 * 86400 for t in s.created_at)
    return [
        ("nan", with_rows(s, vectors=nan), {"expect_column_values_to_be_between(nonfinite)"}, "17"),
        ("dimension", with_rows(s, dims=tuple(dims)), {"expect_column_values_to_be_between(dimension)"}, "5"),
        ("noise dropped", with_rows(s, vectors=unit_vectors(300, 0)), {"expect_column_values_to_be_between(norm)"},
         "0"),
        ("too few", clean_sample(n=40), {"expect_table_row_count_to_be_between"}, None),
        ("stale", with_rows(s, created_at=old), {"expect_column_max_to_be_between(created_at)"}, None),
        ("duplicate ids", with_rows(s, ids=tuple(ids)), {"expect_column_values_to_be_unique(id)"}, "8"),
    ]


@pytest.mark.parametrize(("case", "sample", "expected", "row"), broken_cases(), ids=lambda v: v if isinstance(
    v, str) else "")
def test_each_broken_sample_fails_naming_the_expectation_and_rows(case, sample, expected, row):
    report = validate(sample, RULES)
    assert not report.success
    assert failed(report) == expected, report.summary()
    if row is not None:
        assert row in report.failed[0].unexpected_ids
    assert "sample failed validation: expect_" in report.summary()


def test_an_unknown_version_is_named():
    report = validate(clean_sample(), RULES, versions=("v1",) * 299 + ("v9",))
    assert failed(report) == {"expect_column_values_to_be_in_set(version)"}
    assert report.failed[0].unexpected_ids == ("299",)


def test_norm_ranges_follow_the_transform():
    plain = rules_for(Identity(), DIM, 10, ["v1"], None)
    assert validate(replace(clean_sample(), vectors=unit_vectors(300, 3)), plain).success
    assert not validate(clean_sample(sigma=0.05), plain).success          # noise where none is declared
    assert len(plain.known_versions) == 1 and plain.max_age is None
