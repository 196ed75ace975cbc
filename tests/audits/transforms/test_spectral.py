"""spectral: keep the first components of a pca or dct basis, rescaled to the input's norm, with
optional calibrated Gaussian noise; the pca basis is fitted once and pinned by hash."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError
from scipy.fft import dct

from audits.corpus import generate_messages
from audits.dp import analytic_gaussian_sigma, gdp_epsilon
from audits.errors import ConfigError
from audits.paraphrase import paraphrase_pairs
from audits.pipeline import EmbeddingCache
from audits.probes.base import Auxiliary
from audits.probes.dp_audit import DpAudit
from audits.results import Sample
from audits.transforms import (
    TRANSFORMS,
    ClipGaussian,
    FitMaterial,
    JlGaussian,
    Spectral,
    TransformArtifactError,
    describe_guarantee,
    fit_spec,
    make_transform,
    needs_fit,
)
from monitors.config import TransformConfig
from monitors.frontier.measure import recall_at_k

DIM = 384
SHA = "ab" * 32


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def pairs(encoder, model_cache) -> tuple[np.ndarray, np.ndarray]:
    """200 paraphrase pairs through the bundled encoder: (queries, documents); the documents are
    generate_messages(200, seed=3)'s texts, the real-ish messages the norm checks use (test_jl's
    too: the session's embedding cache encodes them once)."""
    p = paraphrase_pairs(200, seed=3)
    cache = EmbeddingCache(model_cache)
    return cache.encode(encoder, list(p.queries)), cache.encode(encoder, list(p.documents))


@pytest.fixture(scope="module")
def material(encoder, model_cache) -> FitMaterial:
    """The auxiliary corpus a pca basis is fitted on: other synthetic messages than the pairs'."""
    texts = tuple(m.text for m in generate_messages(130, seed=41))
    return FitMaterial(texts, EmbeddingCache(model_cache).encode(encoder, list(texts)), "test-messages-130-41")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spectral-fits")


def fitted(material: FitMaterial, store: Path, **params) -> Spectral:
    spec = fit_spec({"kind": "spectral", "basis": "pca", **params}, material, store)
    transform = make_transform(spec)
    assert isinstance(transform, Spectral)
    return transform


def in_range(transform, y: np.ndarray, dimension: int) -> bool:
    low, high = transform.norm_range(dimension)
    norms = np.linalg.norm(y, axis=1)
    return bool(low <= norms.min() and norms.max() <= high)


# -- specs -----------------------------------------------------------------------------------------


def test_spec_round_trips_through_make_transform_and_the_config():
    assert TRANSFORMS["spectral"] is Spectral
    spec = {"kind": "spectral", "basis": "dct", "keep": 32, "epsilon": 300.0, "delta": 1e-6, "clip_norm": 0.5}
    direct = make_transform(spec)
    assert direct == Spectral(basis="dct", keep=32, epsilon=300.0, delta=1e-6, clip_norm=0.5)
    adapter = TypeAdapter(TransformConfig)
    assert make_transform(adapter.validate_python(spec).spec()) == direct
    pinned = {"kind": "spectral", "keep": 8, "artifact": "/fits/spectral-x.npz", "sha256": SHA}
    config = adapter.validate_python(pinned)
    assert config.spec() == {**pinned, "basis": "pca", "epsilon": None, "delta": 1e-5, "clip_norm": 1.0}
    assert make_transform(config.spec()) == Spectral(keep=8, artifact="/fits/spectral-x.npz", sha256=SHA)
    # Only pca is fitted: dct is a fixed basis.
    assert needs_fit({"kind": "spectral", "keep": 8}) and needs_fit({"kind": "spectral", "basis": "pca", "keep": 8})
    assert not needs_fit({"kind": "spectral", "basis": "dct", "keep": 8}) and not needs_fit(pinned)
    assert Spectral.fits({"basis": "pca"}) and not Spectral.fits({"basis": "dct"})


@pytest.mark.parametrize("bad, match", [
    ({"basis": "fourier"}, "spectral.basis must be 'pca' or 'dct', got 'fourier'"),
    ({"keep": 0}, "spectral.keep must be an integer >= 1, got 0"),
    ({"keep": 2.5}, "spectral.keep must be an integer >= 1"),
    ({"keep": True}, "spectral.keep must be an integer >= 1"),
    ({"epsilon": 0.0}, "spectral.epsilon must be a finite number > 0"),
    ({"epsilon": float("inf")}, "spectral.epsilon must be a finite number > 0"),
    ({"delta": 1.0}, r"spectral.delta must be in \(0, 1\)"),
    ({"clip_norm": -1.0}, "spectral.clip_norm must be a finite number > 0"),
    ({"basis": "dct", "artifact": "/a.npz", "sha256": SHA}, "spectral.artifact: the dct basis is fixed"),
    ({"artifact": "/a.npz"}, "spectral.artifact and spectral.sha256: give both"),
])
def test_invalid_fields_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=f"transform spectral: {match}"):
        make_transform({"kind": "spectral", "keep": 8, **bad})


def test_the_config_refuses_what_the_transform_refuses():
    adapter = TypeAdapter(TransformConfig)
    for bad in ({"keep": 0}, {"basis": "wavelet"}, {"epsilon": 0}, {"keep": 8.0}, {"artifact": "/a.npz"}):
        with pytest.raises(ValidationError):
            adapter.validate_python({"kind": "spectral", "keep": 8, **bad})
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "spectral"})   # keep has no default


def test_keep_beyond_the_input_dimension_is_refused_when_applied(material, store):
    with pytest.raises(ValueError, match="spectral.keep=400 exceeds the input dimension 384"):
        Spectral(basis="dct", keep=400).apply(unit_vectors(3), np.random.default_rng(0))
    with pytest.raises(ValueError, match="spectral.keep=200 exceeds the 130 components of the pca basis"):
        fitted(material, store, keep=200).apply(unit_vectors(3), np.random.default_rng(0))
    with pytest.raises(ValueError, match="fitted on 384-dimensional vectors, got 16"):
        fitted(material, store, keep=8).apply(unit_vectors(3, dim=16), np.random.default_rng(0))


# -- the bases -------------------------------------------------------------------------------------


def test_pca_is_fitted_into_the_store_pinned_and_reloaded(material, store, tmp_path):
    spec = fit_spec({"kind": "spectral", "keep": 16, "epsilon": 1000.0}, material, tmp_path)
    artifact = Path(spec["artifact"])
    assert artifact.parent == tmp_path and spec["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    # Content-keyed on the fit parameters (basis) and the material: keep and epsilon do not refit.
    again = fit_spec({"kind": "spectral", "keep": 64}, material, tmp_path)
    assert (again["artifact"], again["sha256"]) == (spec["artifact"], spec["sha256"])
    assert len(list(tmp_path.iterdir())) == 1
    with np.load(artifact) as npz:
        components, mean, variance = npz["components"], npz["mean"], npz["variance"]
    assert components.dtype == np.float32 and components.shape == (130, DIM)
    assert np.allclose(components @ components.T, np.eye(130), atol=1e-5)   # orthonormal rows
    assert np.all(np.diff(variance) <= 1e-7) and variance[0] > 10 * variance[60]   # ordered by variance
    assert np.allclose(mean, material.clean.mean(axis=0), atol=1e-6)

    transform = make_transform(spec)
    x = np.asarray(material.clean[:20], dtype=np.float64)
    y = transform.apply(x, np.random.default_rng(0))
    assert y.shape == (20, 16) and y.dtype == np.float32 and transform.output_dimension(DIM) == 16
    # Without noise: the centred projection onto the top 16 directions, rescaled to the input's norm.
    clean = dataclasses.replace(transform, epsilon=None).apply(x, np.random.default_rng(0))
    projection = (x - mean) @ components[:16].T.astype(np.float64)
    expected = projection / np.linalg.norm(projection, axis=1, keepdims=True)
    assert np.allclose(clean, expected, atol=1e-5)
    # A changed artifact, or none, is refused rather than applied.
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(TransformArtifactError, match="changed since the version was made"):
        make_transform(spec).apply(x, np.random.default_rng(0))
    with pytest.raises(TransformArtifactError, match="needs `artifact` and `sha256`"):
        Spectral(keep=4).apply(x, np.random.default_rng(0))


def test_dct_needs_no_artifact_and_keeps_the_low_coefficients(tmp_path, material):
    spec = {"kind": "spectral", "basis": "dct", "keep": 24}
    assert fit_spec(spec, material, tmp_path) == spec and not list(tmp_path.iterdir())
    transform = make_transform(spec)
    assert transform.guarantee() is None and transform.noise_model(DIM) is None
    assert describe_guarantee(transform) == "none"
    x = unit_vectors(50) * 0.7
    y = transform.apply(x, np.random.default_rng(0))
    coefficients = dct(x.astype(np.float64), type=2, norm="ortho", axis=1)[:, :24]
    # Same directions as the kept coefficients, the input's norm (0.7): cosine is unchanged.
    assert np.allclose(y, coefficients / np.linalg.norm(coefficients, axis=1, keepdims=True) * 0.7, atol=1e-5)
    assert np.array_equal(y, transform.apply(x, np.random.default_rng(1)))   # deterministic without epsilon
    assert transform.apply(np.zeros((0, DIM), np.float32), np.random.default_rng(0)).shape == (0, 24)


def test_noise_goes_to_the_kept_coordinates_with_the_stated_sigma():
    transform = Spectral(basis="dct", keep=16, epsilon=5.0, clip_norm=0.5)
    x = np.repeat(unit_vectors(1, seed=4) * 3, 20_000, axis=0)   # clipped to 0.5
    y = transform.apply(x, np.random.default_rng(2))
    clean = dataclasses.replace(transform, epsilon=None).apply(x[:1] * (0.5 / 3), np.random.default_rng(0))
    residual = y - clean
    assert np.linalg.norm(clean) == pytest.approx(0.5, rel=1e-6)
    assert abs(float(residual.mean())) < 0.01 * transform.sigma
    assert float(residual.std()) == pytest.approx(transform.sigma, rel=0.01)


# -- the claim -------------------------------------------------------------------------------------


def test_the_guarantee_is_the_analytic_gaussian_for_twice_the_clip_norm():
    transform = Spectral(basis="dct", keep=8, epsilon=3.0, delta=1e-6, clip_norm=0.25)
    g = transform.guarantee()
    assert (g.mechanism, g.epsilon, g.delta, g.sensitivity) == ("gaussian", 3.0, 1e-6, 0.5)
    assert g.noise == pytest.approx(analytic_gaussian_sigma(3.0, 1e-6, 0.5), rel=1e-12)
    assert g.noise == pytest.approx(ClipGaussian(3.0, 1e-6, 0.25).sigma, rel=1e-12)
    assert transform.noise_model(DIM).variance == pytest.approx(g.noise**2)
    assert describe_guarantee(transform).startswith("(epsilon=3, delta=1e-06)-DP per query")


def test_norms_of_real_and_random_unit_vectors_stay_inside_the_range(pairs, material, store):
    _, documents = pairs
    transforms = [Spectral(basis="dct", keep=32), Spectral(basis="dct", keep=32, epsilon=300.0),
                  Spectral(basis="dct", keep=128, epsilon=30.0, clip_norm=0.5), fitted(material, store, keep=16),
                  fitted(material, store, keep=64, epsilon=1000.0), fitted(material, store, keep=128, epsilon=30.0)]
    for transform in transforms:
        for x in (documents, unit_vectors(2000, seed=9)):
            assert in_range(transform, transform.apply(x, np.random.default_rng(5)), DIM), transform


def test_undone_transforms_fall_outside_the_range(pairs, material, store):
    _, documents = pairs
    noisy = fitted(material, store, keep=128, epsilon=30.0)
    # Identity output (unit norm): the noise of 128 coordinates at sigma 0.43 is far more.
    assert not in_range(noisy, documents, DIM)
    # The noise dropped: the clean kept coordinates.
    clean = dataclasses.replace(noisy, epsilon=None)
    assert not in_range(noisy, clean.apply(documents, np.random.default_rng(0)), DIM)
    # Without noise the output keeps the input's norm: a plain projection, not rescaled, is caught.
    components, mean = clean.basis_arrays
    plain = (documents - mean) @ components[:128].T
    assert in_range(clean, clean.apply(documents, np.random.default_rng(0)), DIM)
    assert not in_range(clean, plain, DIM)


# -- the empirical audit ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Claiming:
    """Releases through `actual`, states `claimed`'s guarantee: the bug an audit must catch."""

    actual: Spectral
    claimed: Spectral

    def release(self, seed: int):
        rng = np.random.default_rng([seed, 17])
        return lambda x: self.actual.apply(x, rng)


def audit(claiming: Claiming, dimension: int, seed: int = 0) -> DpAudit:
    aux = Auxiliary((), np.zeros((0, dimension), np.float32), release=claiming.release(seed),
                    guarantee=claiming.claimed.guarantee())
    probe = DpAudit(seed=seed, queries=6000, threshold_queries=2000).fit(aux)
    probe.score(Sample(("a",), np.zeros((1, dimension), np.float32), None, "v"))
    return probe


@pytest.fixture(scope="module")
def small_pca(tmp_path_factory) -> Spectral:
    """A pca basis of anisotropic 16-dimensional vectors, for fast audits."""
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((400, 16)) * np.geomspace(3, 0.1, 16) + 0.5
    clean /= np.linalg.norm(clean, axis=1, keepdims=True)
    spec = fit_spec({"kind": "spectral", "keep": 6, "epsilon": 2.0}, FitMaterial(("t",) * 400, clean, "aniso-16"),
                    tmp_path_factory.mktemp("small-pca"))
    return make_transform(spec)


def test_an_honest_spectral_release_passes_the_audit(small_pca):
    for transform, dimension in ((small_pca, 16), (Spectral(basis="dct", keep=8, epsilon=2.0), 32)):
        probe = audit(Claiming(transform, transform), dimension)
        details = probe.details_
        assert details.claimed_epsilon == 2.0 and details.direction == "mean difference"
        assert not details.violated and details.empirical_epsilon[0] <= 2.0


def test_the_audit_catches_a_ten_times_smaller_sigma_and_dropped_noise(small_pca):
    for transform, dimension in ((small_pca, 16), (Spectral(basis="dct", keep=8, epsilon=2.0), 32)):
        g = transform.guarantee()
        quieter = dataclasses.replace(transform, epsilon=gdp_epsilon(10 * g.mu, g.delta))
        assert quieter.sigma == pytest.approx(transform.sigma / 10, rel=1e-6)
        weak = audit(Claiming(quieter, transform), dimension)
        assert weak.details_.violated and weak.details_.empirical_epsilon[0] > 2 * g.epsilon
        dropped = audit(Claiming(dataclasses.replace(transform, epsilon=None), transform), dimension)
        assert dropped.details_.violated and dropped.details_.empirical_epsilon[0] > 10


# -- what it keeps ---------------------------------------------------------------------------------


def test_retrieval_against_clip_gaussian_and_jl_gaussian_at_the_same_epsilon(pairs, material, store):
    """recall@10 of 200 paraphrase pairs (printed with -s); spectral keeps the most at the same epsilon."""
    queries, documents = pairs

    def recall(transform) -> float:
        return np.mean([recall_at_k(transform.apply(queries, np.random.default_rng([r, 0])),
                                    transform.apply(documents, np.random.default_rng([r, 1])), 10).recall
                        for r in range(3)])

    assert recall_at_k(queries, documents, 10).recall > 0.95
    table = {}
    for epsilon in (300.0, 1000.0, 3000.0):
        table[epsilon] = {"clip_gaussian": recall(ClipGaussian(epsilon)),
                          "jl_gaussian k=64": recall(JlGaussian(64, epsilon)),
                          "spectral pca k=64": recall(fitted(material, store, keep=64, epsilon=epsilon))}
        print(f"recall@10 at epsilon {epsilon:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in table[epsilon].items()))
    at_300 = table[300.0]
    assert at_300["spectral pca k=64"] > 0.95 and at_300["spectral pca k=64"] >= at_300["clip_gaussian"]
    assert at_300["clip_gaussian"] > at_300["jl_gaussian k=64"] + 0.2
    assert all(row["spectral pca k=64"] > 0.95 for row in table.values())
