"""Privacy transforms: what each does to vectors, the norms validation expects, what each claims."""

from __future__ import annotations

import numpy as np
import pytest

from audits.dp import gdp_delta
from audits.errors import ConfigError
from audits.transforms import (
    ClipGaussian,
    GaussianNoise,
    Identity,
    Quantize,
    RandomProjection,
    VonMisesFisher,
    describe_guarantee,
    make_transform,
)

DIM = 384


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


ALL = [Identity(), GaussianNoise(0.05), ClipGaussian(1.0), ClipGaussian(5000.0, clip_norm=0.5), VonMisesFisher(200.0),
       VonMisesFisher(5.0), RandomProjection(64), Quantize(1), Quantize(4), Quantize(8)]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: repr(t))
def test_output_shape_dtype_and_norms_inside_the_validated_range(transform):
    x = unit_vectors(2000)
    y = transform.apply(x, np.random.default_rng(1))
    assert y.dtype == np.float32
    assert y.shape == (2000, transform.output_dimension(DIM))
    low, high = transform.norm_range(DIM)
    norms = np.linalg.norm(y, axis=1)
    assert low <= norms.min() and norms.max() <= high


@pytest.mark.parametrize("transform", [GaussianNoise(0.05), ClipGaussian(1000.0)], ids=repr)
def test_a_dropped_noise_falls_outside_the_norm_range(transform):
    """Production that stores clean vectors under a noisy version fails sample validation."""
    low, _ = transform.norm_range(DIM)
    assert low > 1.0


def test_clip_gaussian_clips_then_adds_calibrated_noise():
    t = ClipGaussian(2.0, delta=1e-5, clip_norm=0.5)
    assert t.sensitivity == 1.0
    assert gdp_delta(2.0, t.sensitivity / t.sigma) == pytest.approx(1e-5, rel=1e-6)
    big = unit_vectors(20_000) * 3
    y = t.apply(big, np.random.default_rng(0))
    # The mean of the output is the clipped input: noise is centred, clipping scales to 0.5.
    residual = y - big * (0.5 / 3)
    assert abs(float(residual.mean())) < 0.01
    assert float(residual.std()) == pytest.approx(t.sigma, rel=0.01)
    g = t.guarantee()
    assert (g.mechanism, g.epsilon, g.delta, g.sensitivity) == ("gaussian", 2.0, 1e-5, 1.0)
    assert "(epsilon=2, delta=1e-05)-DP" in describe_guarantee(t)


def test_noise_is_fresh_per_call():
    x = unit_vectors(5)
    rng = np.random.default_rng(0)
    for t in (ClipGaussian(1.0), VonMisesFisher(10.0), GaussianNoise(0.1)):
        assert not np.allclose(t.apply(x, rng), t.apply(x, rng))
    for t in (RandomProjection(32), Quantize(8), Identity()):
        assert np.array_equal(t.apply(x, rng), t.apply(x, rng))


def test_vmf_stays_on_the_sphere_centred_on_the_input():
    t = VonMisesFisher(400.0)   # kappa 200
    x = np.repeat(unit_vectors(1, seed=3), 4000, axis=0)
    y = t.apply(x, np.random.default_rng(0))
    mean = y.mean(axis=0)
    # The mean direction is the input's, and the mean resultant length is A_d(kappa) < 1.
    assert float(mean @ x[0] / np.linalg.norm(mean)) > 0.99
    from scipy.special import ive

    d, kappa = DIM, t.kappa
    expected = ive(d / 2, kappa) / ive(d / 2 - 1, kappa)
    assert float((y @ x[0]).mean()) == pytest.approx(expected, rel=0.02)
    assert t.guarantee().epsilon == 400.0 and t.guarantee().delta == 0.0


def test_random_projection_keeps_distances_and_is_fixed_by_its_seed():
    x = unit_vectors(200)
    t = RandomProjection(256, seed=5)
    y = t.apply(x, np.random.default_rng(0))
    i, j = np.triu_indices(200, k=1)
    before = np.linalg.norm(x[i] - x[j], axis=1)
    after = np.linalg.norm(y[i] - y[j], axis=1)
    assert np.median(np.abs(after / before - 1)) < 0.05
    assert np.array_equal(y, RandomProjection(256, seed=5).apply(x, np.random.default_rng(9)))
    assert not np.array_equal(y, RandomProjection(256, seed=6).apply(x, np.random.default_rng(0)))
    assert t.guarantee() is None and describe_guarantee(t) == "none"


def test_quantize_keeps_direction():
    x = unit_vectors(500)
    for bits, min_cos in ((1, 0.75), (4, 0.98), (8, 0.9999)):
        y = Quantize(bits).apply(x, np.random.default_rng(0))
        assert float(np.einsum("ij,ij->i", x, y).min()) > min_cos
    assert np.unique(Quantize(1).apply(x, np.random.default_rng(0))).size == 2


def test_make_transform_from_configuration():
    assert isinstance(make_transform({"kind": "none"}), Identity)
    assert make_transform({"kind": "clip_gaussian", "epsilon": 3, "delta": 1e-6}) == ClipGaussian(3, 1e-6)
    assert make_transform({"kind": "random_projection", "dimension": 64}).output_dimension(DIM) == 64
    with pytest.raises(ConfigError, match="unknown transform 'laplace'"):
        make_transform({"kind": "laplace", "epsilon": 1})
    with pytest.raises(ConfigError, match="epsilon must be a finite number > 0"):
        make_transform({"kind": "clip_gaussian", "epsilon": 0})
    with pytest.raises(ConfigError, match="bits must be between 1 and 16"):
        make_transform({"kind": "quantize", "bits": 0})
    with pytest.raises(ConfigError, match="unexpected keyword argument 'sigma'"):
        make_transform({"kind": "vmf", "epsilon": 1, "sigma": 2})
