"""adversarial: a map fitted on the auxiliary corpus against a bag-of-words word classifier, pinned by
hash; judged here with the real encoder, the real bag-of-words attacker and paraphrase retrieval."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from audits.corpus import generate_messages
from audits.errors import ConfigError
from audits.paraphrase import paraphrase_pairs
from audits.pipeline import EmbeddingCache
from audits.probes.base import Auxiliary
from audits.probes.bow_inversion import BowInversion
from audits.results import Sample
from audits.transforms import (
    TRANSFORMS,
    FitMaterial,
    TransformArtifactError,
    describe_guarantee,
    fit_spec,
    make_transform,
    needs_fit,
)
from audits.transforms.adversarial import Adversarial, schedule
from audits.transforms.fitting import dumps
from monitors.config import TransformConfig
from monitors.frontier.measure import recall_at_k

SHA = "ab" * 32


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """The attacker's small matrices run many times faster on one thread when the CPUs are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def material(encoder, model_cache) -> FitMaterial:
    """The auxiliary corpus: 300 synthetic messages (seed 1) through the bundled encoder (pac_gaussian's
    tests encode the same corpus into the same cache, once per session)."""
    texts = tuple(m.text for m in generate_messages(300, seed=1))
    clean = EmbeddingCache(model_cache / "embeddings").encode(encoder, list(texts))
    return FitMaterial(texts, clean, f"{encoder.fingerprint}:aux-300-1", seed=0)


@pytest.fixture(scope="module")
def pairs(encoder, model_cache) -> tuple[np.ndarray, np.ndarray]:
    """200 paraphrase pairs (queries, documents); the documents are generate_messages(200, seed=3),
    other people than the auxiliary corpus's: the attacker's targets too (spectral's and jl's tests
    encode the same pairs, once per session)."""
    p = paraphrase_pairs(200, seed=3)
    cache = EmbeddingCache(model_cache)
    return cache.encode(encoder, list(p.queries)), cache.encode(encoder, list(p.documents))


@pytest.fixture(scope="module")
def fitted(material, tmp_path_factory) -> dict[float, dict]:
    """Specs fitted at privacy_weight 0 and 1 (10 rounds), by privacy weight."""
    store = tmp_path_factory.mktemp("adversarial-store")
    return {w: fit_spec({"kind": "adversarial", "privacy_weight": w, "epochs": 10}, material, store) for w in (0, 1)}


def test_fields_are_validated_by_name():
    for params, field in [({"privacy_weight": -1}, "privacy_weight"), ({"privacy_weight": float("nan")},
                                                                        "privacy_weight"),
                          ({"privacy_weight": 1, "sigma": -0.1}, "sigma"),
                          ({"privacy_weight": 1, "sigma": float("inf")}, "sigma"),
                          ({"privacy_weight": 1, "epochs": 0}, "epochs"),
                          ({"privacy_weight": 1, "epochs": 2.5}, "epochs"),
                          ({"privacy_weight": 1, "sha256": "xyz"}, "sha256")]:
        with pytest.raises(ValueError, match=f"adversarial.{field}"):
            Adversarial(**{"artifact": "a.npz", "sha256": SHA, **params})
    assert TRANSFORMS["adversarial"] is Adversarial and Adversarial.fitted
    assert Adversarial.fit_parameters == ("privacy_weight", "epochs")


def test_a_spec_without_its_artifact_is_refused_with_how_to_fit_it():
    spec = {"kind": "adversarial", "privacy_weight": 1}
    assert needs_fit(spec)
    with pytest.raises(ConfigError, match=r"adversarial.artifact and sha256 missing.*versions add"):
        make_transform(spec)
    with pytest.raises(ConfigError, match="adversarial.sha256 missing"):
        make_transform({**spec, "artifact": "somewhere.npz"})


def test_fit_spec_pins_the_artifact_and_finds_it_again(material, tmp_path):
    spec = {"kind": "adversarial", "privacy_weight": 1, "epochs": 3}
    first = fit_spec(spec, material, tmp_path)
    artifact = Path(first["artifact"])
    assert artifact.parent == tmp_path and first["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert first == {**spec, "artifact": str(artifact), "sha256": first["sha256"]} and not needs_fit(first)
    written = artifact.stat().st_mtime_ns
    # The same fit again finds it; sigma is applied after the map, so the fit does not depend on it.
    assert fit_spec(spec, material, tmp_path) == first
    assert fit_spec({**spec, "sigma": 0.05}, material, tmp_path)["artifact"] == str(artifact)
    assert artifact.stat().st_mtime_ns == written and len(list(tmp_path.iterdir())) == 1
    # What the version stores reads back through the configuration model.
    configured = TypeAdapter(TransformConfig).validate_python(first).spec()
    assert make_transform(configured).matrix.shape == (384, 384)
    # The rounds are the fit's: another epochs is another artifact.
    assert fit_spec({**spec, "epochs": 4}, material, tmp_path)["artifact"] != str(artifact)


def test_a_changed_or_foreign_artifact_is_refused(fitted, tmp_path):
    spec = fitted[1]
    tampered = tmp_path / "tampered.npz"
    data = bytearray(Path(spec["artifact"]).read_bytes())
    data[-40] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(TransformArtifactError, match="changed since the version was made"):
        make_transform({**spec, "artifact": str(tampered)}).apply(np.eye(2, 384, dtype=np.float32),
                                                                   np.random.default_rng(0))
    with pytest.raises(TransformArtifactError, match="not found"):
        make_transform({**spec, "artifact": str(tmp_path / "gone.npz")}).apply(np.eye(2, 384), np.random.default_rng(0))
    foreign = tmp_path / "foreign.npz"
    foreign.write_bytes(dumps({"components": np.eye(4, dtype=np.float32)}))
    with pytest.raises(TransformArtifactError, match="not an adversarial map"):
        make_transform({**spec, "artifact": str(foreign), "sha256": hashlib.sha256(foreign.read_bytes()).hexdigest()
                        }).apply(np.eye(2, 384), np.random.default_rng(0))


def test_apply_is_a_fixed_unit_norm_map_and_sigma_adds_fresh_noise(fitted, pairs):
    _, documents = pairs
    transform = make_transform(fitted[1])
    first = transform.apply(documents, np.random.default_rng(0))
    second = transform.apply(documents, np.random.default_rng(1))
    assert first.dtype == np.float32 and first.shape == documents.shape
    np.testing.assert_array_equal(first, second)   # deterministic: the rng is unused without noise
    low, high = transform.norm_range(384)
    assert (low, high) == (1 - 1e-3, 1 + 1e-3)
    assert np.all((np.linalg.norm(first, axis=1) >= low) & (np.linalg.norm(first, axis=1) <= high))
    assert not np.allclose(first, documents, atol=1e-3)   # privacy_weight 1 removed directions
    assert transform.guarantee() is None and transform.statement() is None and transform.noise_model(384) is None
    assert describe_guarantee(transform) == "none" and transform.output_dimension(384) == 384
    with pytest.raises(ValueError, match="fitted on 384-dimensional vectors"):
        transform.apply(np.ones((2, 8), dtype=np.float32), np.random.default_rng(0))

    noisy = make_transform({**fitted[1], "sigma": 0.05})
    rng = np.random.default_rng(2)
    a, b = noisy.apply(documents, rng), noisy.apply(documents, rng)
    assert a.dtype == np.float32 and not np.allclose(a, b)   # fresh noise on every call
    assert np.std(a - first) == pytest.approx(0.05, rel=0.02)
    low, high = noisy.norm_range(384)
    assert np.all((np.linalg.norm(a, axis=1) >= low) & (np.linalg.norm(a, axis=1) <= high))
    assert noisy.noise_model(384).variance == pytest.approx(0.05**2) and noisy.guarantee() is None


def test_privacy_weight_zero_keeps_the_vectors(fitted, pairs):
    transform = make_transform(fitted[0])
    assert not transform.matrix.any()
    _, documents = pairs
    np.testing.assert_allclose(transform.apply(documents, np.random.default_rng(0)), documents, atol=1e-6)


def test_the_rounds_remove_growing_numbers_of_directions_and_too_little_text_is_refused(material):
    steps = schedule(30, 384)
    assert steps[0] == 1 and steps[-1] == 288 and all(b > a for a, b in zip(steps, steps[1:], strict=False))
    assert schedule(1000, 8) == [1, 2, 3, 4, 5, 6]   # never more rounds than directions to remove
    small = FitMaterial(material.texts[:20], material.clean[:20], "tiny")
    with pytest.raises(ValueError, match="at least 50"):
        Adversarial.fit({"privacy_weight": 1}, small)


def test_the_map_hides_words_from_an_attacker_trained_on_clean_vectors_not_from_one_trained_on_its_output(
        fitted, material, pairs):
    """Measured (300 auxiliary texts, 200 targets of other people, 10 rounds: 26 of 384 directions
    removed): token F1 of an attacker trained on clean vectors 0.59 without the map, 0.0 with it;
    one trained on the map's outputs recovers 0.22 (what the removed directions carried is gone for
    it too, the rest it learns). Paraphrase retrieval recall@10 stays 1.0."""
    queries, documents = pairs
    targets = paraphrase_pairs(200, seed=3).documents
    plain, private = make_transform(fitted[0]), make_transform(fitted[1])

    def token_f1(attacker: BowInversion, vectors: np.ndarray):
        sample = Sample(tuple(map(str, range(len(targets)))), vectors, targets, "v")
        return next(s for s in attacker.score(sample) if s.metric == "token_f1")

    def attacker(vectors: np.ndarray) -> BowInversion:
        with one_torch_thread():
            return BowInversion(seed=0, epochs=15, stack=False, bootstrap_resamples=500).fit(
                Auxiliary(material.texts, vectors))

    rng = np.random.default_rng(0)
    naive = attacker(material.clean)
    without = token_f1(naive, plain.apply(documents, rng))
    with_map = token_f1(naive, private.apply(documents, rng))
    assert without.value > 0.5 and with_map.ci_high < without.ci_low

    adaptive = token_f1(attacker(private.apply(material.clean, rng)), private.apply(documents, rng))
    assert with_map.ci_high < adaptive.ci_low    # a naive attacker's score overstates the protection
    assert adaptive.ci_high < without.ci_low     # what the removed directions carried is gone
    assert recall_at_k(private.apply(queries, rng), private.apply(documents, rng)).recall >= 0.95
