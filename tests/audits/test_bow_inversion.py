"""bow_inversion against real MiniLM embeddings of synthetic messages."""

import numpy as np
import pytest

from audits.corpus import generate_messages
from audits.errors import ProbeError
from audits.pipeline import EmbeddingCache, Pipeline
from audits.probes import make_probe
from audits.probes.base import Auxiliary
from audits.probes.bow_inversion import BowInversion, content_words
from audits.results import Sample
from audits.transforms import GaussianNoise, Identity
from tests.helpers import messages


@pytest.fixture(scope="module")
def corpora(encoder, tmp_path_factory):
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache"))
    aux, target = messages(600, seed=1), generate_messages(150, seed=2)
    return aux, cache.encode(encoder, aux), target, cache.encode(encoder, [m.text for m in target])


def attack(corpora, transform, seed=0):
    aux, aux_clean, target, target_clean = corpora
    probe = BowInversion(seed=seed, epochs=30, bootstrap_resamples=500)
    probe.fit(Auxiliary(tuple(aux), transform.apply(aux_clean, np.random.default_rng(1))))
    sample = Sample(tuple(map(str, range(len(target)))), transform.apply(target_clean, np.random.default_rng(2)),
                    tuple(m.text for m in target), "v", secrets=tuple(m.secrets for m in target))
    return {s.metric: s for s in probe.score(sample)}


def test_clean_vectors_leak_words_and_heavy_noise_hides_them(corpora):
    clean = attack(corpora, Identity())
    noisy = attack(corpora, GaussianNoise(0.5))
    assert clean["token_precision"].value > 0.7          # what it predicts is mostly right
    assert clean["token_f1"].value > 0.4
    assert noisy["token_f1"].ci_high < clean["token_f1"].ci_low  # separated beyond their intervals
    # Secret recovery is reported where targets carry secrets; its strength is issue 3's work
    # (measured here: ~0 for names and conditions with a 600-text auxiliary corpus).
    assert 0.0 <= clean["secret_recovery"].value <= 1.0 and clean["secret_recovery"].n == 150
    for score in clean.values():
        assert score.ci_low <= score.value <= score.ci_high and 0 < score.n <= 150


def test_secret_recovery_counts_identifying_words_only(corpora):
    aux, aux_clean, target, _ = corpora
    probe = BowInversion(epochs=1).fit(Auxiliary(tuple(aux), aux_clean))
    assert "example" in probe.common_words_          # in every email address: identifies nobody
    assert not {"lupus", "asthma"} & probe.common_words_


def test_scores_are_reproducible_for_a_seed(corpora):
    first, second = attack(corpora, Identity(), seed=3), attack(corpora, Identity(), seed=3)
    assert first["token_f1"] == second["token_f1"]


def test_stop_words_are_not_counted_as_leaks():
    assert content_words("The patient is on the list for a refund", frozenset({"the", "is", "on", "for"})) == {
        "patient", "list", "refund"}


def test_misuse_is_reported(corpora):
    aux, aux_clean, target, target_clean = corpora
    probe = BowInversion(epochs=1)
    no_text = Sample(("1",), target_clean[:1], None, "v")
    with pytest.raises(ProbeError, match="before fit"):
        probe.score(no_text)
    probe.fit(Auxiliary(tuple(aux[:100]), aux_clean[:100]))
    with pytest.raises(ProbeError, match="texts"):
        probe.score(no_text)
    with pytest.raises(ProbeError, match="expected >= 20"):
        BowInversion().fit(Auxiliary(tuple(aux[:5]), aux_clean[:5]))


def test_pipeline_applies_the_transform_after_cached_encoding(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path)
    pipeline = Pipeline(encoder, GaussianNoise(0.1))
    a = pipeline.embed(["hello there"] * 3, np.random.default_rng(0), cache=cache)
    b = pipeline.embed(["hello there"] * 3, np.random.default_rng(1), cache=cache)
    assert len(list(tmp_path.rglob("*.npy"))) == 1            # encoded once
    assert not np.allclose(a, b)                              # fresh noise each time


def test_probe_registry_names_unknown_probes():
    from audits.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown probe 'nope'"):
        make_probe("nope")
    with pytest.raises(ConfigError, match="bad parameters"):
        make_probe("bow_inversion", {"wings": 2})
