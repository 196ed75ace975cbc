"""jl_gaussian: clip, a fixed orthonormal random projection, Gaussian noise calibrated for any two
inputs (sensitivity 2 * clip_norm: the projection's largest singular value is 1)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from audits.corpus import generate_messages
from audits.dp import analytic_gaussian_sigma, gdp_epsilon
from audits.errors import ConfigError
from audits.pipeline import EmbeddingCache
from audits.probes.base import Auxiliary
from audits.probes.dp_audit import DpAudit
from audits.results import Sample
from audits.transforms import TRANSFORMS, ClipGaussian, Identity, JlGaussian, describe_guarantee, make_transform
from monitors.config import TransformConfig

DIM = 384


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def messages(encoder, model_cache) -> np.ndarray:
    """200 synthetic messages through the bundled encoder (test_spectral's paraphrase documents:
    the session's embedding cache encodes them once)."""
    return EmbeddingCache(model_cache).encode(encoder, [m.text for m in generate_messages(200, seed=3)])


def in_range(transform, y: np.ndarray, dimension: int = DIM) -> bool:
    low, high = transform.norm_range(dimension)
    norms = np.linalg.norm(y, axis=1)
    return bool(low <= norms.min() and norms.max() <= high)


def clipped(x: np.ndarray, clip_norm: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x * np.minimum(1.0, clip_norm / np.linalg.norm(x, axis=1, keepdims=True))


# -- specs -----------------------------------------------------------------------------------------


def test_spec_round_trips_through_make_transform_and_the_config():
    assert TRANSFORMS["jl_gaussian"] is JlGaussian
    spec = {"kind": "jl_gaussian", "dimension": 64, "epsilon": 300.0, "delta": 1e-6, "clip_norm": 0.5, "seed": 7}
    direct = make_transform(spec)
    assert direct == JlGaussian(64, 300.0, 1e-6, 0.5, 7)
    config = TypeAdapter(TransformConfig).validate_python(spec)
    assert config.spec() == spec and make_transform(config.spec()) == direct
    minimal = TypeAdapter(TransformConfig).validate_python({"kind": "jl_gaussian", "dimension": 32, "epsilon": 2})
    assert make_transform(minimal.spec()) == JlGaussian(32, 2.0)


@pytest.mark.parametrize("bad, match", [
    ({"dimension": 0}, "jl_gaussian.dimension must be an integer >= 1, got 0"),
    ({"dimension": 8.5}, "jl_gaussian.dimension must be an integer >= 1"),
    ({"epsilon": -1.0}, "jl_gaussian.epsilon must be a finite number > 0, got -1.0"),
    ({"epsilon": float("nan")}, "jl_gaussian.epsilon must be a finite number > 0"),
    ({"delta": 0.0}, r"jl_gaussian.delta must be in \(0, 1\)"),
    ({"clip_norm": 0.0}, "jl_gaussian.clip_norm must be a finite number > 0"),
    ({"seed": -1}, r"jl_gaussian.seed must be an integer in \[0, 2\^32\)"),
    ({"seed": 1.5}, "jl_gaussian.seed must be an integer"),
])
def test_invalid_fields_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=f"transform jl_gaussian: {match}"):
        make_transform({"kind": "jl_gaussian", "dimension": 8, "epsilon": 1.0, **bad})
    with pytest.raises(ValidationError):
        TypeAdapter(TransformConfig).validate_python({"kind": "jl_gaussian", "dimension": 8, "epsilon": 1.0, **bad})
    with pytest.raises(ConfigError, match="transform jl_gaussian: .*epsilon"):
        make_transform({"kind": "jl_gaussian", "dimension": 8})   # epsilon is required


def test_projecting_up_is_refused_when_applied():
    with pytest.raises(ValueError, match="jl_gaussian.dimension=64 exceeds the input dimension 32"):
        JlGaussian(64, 1.0).apply(unit_vectors(3, dim=32), np.random.default_rng(0))


# -- the matrix and the noise ----------------------------------------------------------------------


def test_the_matrix_is_fixed_by_the_seed_and_has_orthonormal_rows():
    t = JlGaussian(48, 1.0, seed=3)
    q = t.matrix(DIM)
    assert q.shape == (DIM, 48) and q.dtype == np.float64
    assert np.allclose(q.T @ q, np.eye(48), atol=1e-12)
    # Every singular value is 1: the largest, the sensitivity's factor, exactly (to float64 rounding).
    assert np.linalg.norm(q, 2) == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.svd(q, compute_uv=False).min() == pytest.approx(1.0, abs=1e-12)
    # Seeded from [seed, input dimension, dimension], like random_projection.
    expected, _ = np.linalg.qr(np.random.default_rng([3, DIM, 48]).standard_normal((DIM, 48)))
    assert np.allclose(np.abs(q), np.abs(expected), atol=1e-12)
    assert np.array_equal(q, JlGaussian(48, 5.0, seed=3).matrix(DIM))
    assert not np.allclose(q, JlGaussian(48, 1.0, seed=4).matrix(DIM))


def test_clip_project_then_noise_with_the_stated_sigma():
    t = JlGaussian(16, 5.0, clip_norm=0.5, seed=1)
    x = np.repeat(unit_vectors(1, seed=4, dim=64) * 3, 20_000, axis=0)
    y = t.apply(x, np.random.default_rng(2))
    assert y.shape == (20_000, 16) and y.dtype == np.float32 and t.output_dimension(64) == 16
    residual = y - clipped(x[:1], 0.5) @ t.matrix(64)
    assert abs(float(residual.mean())) < 0.01 * t.sigma
    assert float(residual.std()) == pytest.approx(t.sigma, rel=0.01)
    # A square projection is a rotation: the clipped input's norm is kept before the noise.
    rotation = JlGaussian(64, 5.0).matrix(64)
    assert np.allclose(np.linalg.norm(unit_vectors(5, dim=64) @ rotation, axis=1), 1.0, atol=1e-6)


def test_the_guarantee_is_clip_gaussians_sigma_for_twice_the_clip_norm():
    t = JlGaussian(64, 3.0, delta=1e-6, clip_norm=0.25)
    g = t.guarantee()
    assert (g.mechanism, g.epsilon, g.delta, g.sensitivity) == ("gaussian", 3.0, 1e-6, 0.5)
    assert g.noise == pytest.approx(analytic_gaussian_sigma(3.0, 1e-6, 0.5), rel=1e-12)
    # Per coordinate, exactly clip_gaussian's sigma at the same epsilon (not Kenthapadi et al.'s
    # smaller one, which is for neighbours that differ in one attribute).
    assert g.noise == pytest.approx(ClipGaussian(3.0, 1e-6, 0.25).sigma, rel=1e-12)
    assert t.noise_model(DIM).variance == pytest.approx(g.noise**2)
    assert describe_guarantee(t) == g.describe() and "L2 sensitivity 0.5" in describe_guarantee(t)


# -- the norms sample validation expects -------------------------------------------------------------


@pytest.mark.parametrize("transform", [JlGaussian(64, 1000.0), JlGaussian(64, 3000.0, seed=5), JlGaussian(16, 300.0),
                                       JlGaussian(128, 30.0, clip_norm=0.5), JlGaussian(8, 2.0),
                                       JlGaussian(384, 1000.0)], ids=repr)
def test_norms_of_real_and_random_unit_vectors_stay_inside_the_range(transform, messages):
    for x in (messages, unit_vectors(2000, seed=9)):
        assert in_range(transform, transform.apply(x, np.random.default_rng(5)))


def test_undone_transforms_fall_outside_the_range(messages):
    # Identity output (unit norm): above the range where the projection and noise keep less than
    # that, below it where the noise is larger.
    assert not in_range(JlGaussian(64, 1000.0), Identity().apply(messages, np.random.default_rng(0)))
    assert not in_range(JlGaussian(128, 30.0), messages)
    # The noise dropped: the clean projection (norm about sqrt(k/d)) is below the noisy range.
    t = JlGaussian(128, 100.0)
    assert not in_range(t, messages @ t.matrix(DIM))
    low, high = t.norm_range(DIM)
    assert low > 1.0 and high < 3 * low


# -- the empirical audit ---------------------------------------------------------------------------


def audit(release, claimed: JlGaussian, dimension: int, seed: int = 0) -> DpAudit:
    aux = Auxiliary((), np.zeros((0, dimension), np.float32), release=release, guarantee=claimed.guarantee())
    probe = DpAudit(seed=seed, queries=6000, threshold_queries=2000).fit(aux)
    probe.score(Sample(("a",), np.zeros((1, dimension), np.float32), None, "v"))
    return probe


def releasing(transform: JlGaussian, seed: int = 0):
    rng = np.random.default_rng([seed, 17])
    return lambda x: transform.apply(x, rng)


@pytest.mark.parametrize("epsilon", [1.0, 4.0])
def test_an_honest_release_passes_the_audit(epsilon):
    t = JlGaussian(8, epsilon, seed=2)
    details = audit(releasing(t), t, 32).details_
    assert details.claimed_epsilon == epsilon and details.direction == "mean difference"
    assert not details.violated and details.empirical_epsilon[0] <= epsilon


def test_the_audit_catches_a_ten_times_smaller_sigma_and_dropped_noise():
    t = JlGaussian(8, 2.0, seed=2)
    g = t.guarantee()
    quieter = dataclasses.replace(t, epsilon=gdp_epsilon(10 * g.mu, g.delta))
    assert quieter.sigma == pytest.approx(t.sigma / 10, rel=1e-6)
    weak = audit(releasing(quieter), t, 32).details_
    assert weak.violated and weak.empirical_epsilon[0] > 2 * t.epsilon
    dropped = audit(lambda x: (clipped(x, t.clip_norm) @ t.matrix(32)).astype(np.float32), t, 32).details_
    assert dropped.violated and dropped.empirical_epsilon[0] > 10
