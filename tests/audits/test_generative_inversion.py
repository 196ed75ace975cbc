"""generative_inversion against real MiniLM embeddings of synthetic messages, with a tiny decoder.

The decoder here is one layer trained for a few seconds: enough to tell clean vectors from
noisy ones, not a measure of the attack's strength (that is the default configuration's job).
"""

import pickle

import numpy as np
import pytest

from audits.corpus import generate_messages
from audits.errors import ProbeError
from audits.pipeline import EmbeddingCache
from audits.probes.base import Auxiliary
from audits.probes.generative_inversion import GenerativeInversion, normalize
from audits.results import Sample
from audits.transforms import GaussianNoise, Identity
from tests.helpers import messages

SMALL = {"layers": 1, "prefix_tokens": 2, "max_tokens": 40, "epochs": 6, "batch_size": 32, "learning_rate": 3e-3,
         "beam_size": 2, "max_targets": 30, "bootstrap_resamples": 200}
METRICS = ["bleu", "token_f1", "exact_match", "cosine", "secret_recovery"]


@pytest.fixture(scope="module")
def corpora(encoder, tmp_path_factory):
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache"))
    aux, target = messages(400, seed=1), generate_messages(60, seed=2)
    return aux, cache.encode(encoder, aux), target, cache.encode(encoder, [m.text for m in target])


def fitted(corpora, encoder, transform, seed=0, aux_size=400, **params):
    aux, aux_clean, target, target_clean = corpora
    aux, aux_clean = aux[:aux_size], aux_clean[:aux_size]
    oracle_rng = np.random.default_rng(3)
    probe = GenerativeInversion(seed=seed, **(SMALL | params))
    probe.fit(Auxiliary(tuple(aux), transform.apply(aux_clean, np.random.default_rng(1)),
                        embed=lambda texts: transform.apply(encoder.encode(texts), oracle_rng)))
    sample = Sample(tuple(map(str, range(len(target)))), transform.apply(target_clean, np.random.default_rng(2)),
                    tuple(m.text for m in target), "v", secrets=tuple(m.secrets for m in target))
    return probe, sample


def by_metric(scores):
    return {s.metric: s for s in scores}


@pytest.fixture(scope="module")
def clean(corpora, encoder):
    probe, sample = fitted(corpora, encoder, Identity())
    return probe, sample, by_metric(probe.score(sample))


def test_scores_have_the_documented_names_and_shape(clean):
    _, _, scores = clean
    assert list(scores) == METRICS
    for score in scores.values():
        assert score.probe == "generative_inversion"
        assert score.ci_low <= score.value <= score.ci_high
        assert 0 < score.n <= 30
    assert scores["bleu"].n == 30 and 0 <= scores["bleu"].value <= 100
    assert all(0 <= scores[m].value <= 1 for m in ("token_f1", "exact_match", "secret_recovery"))


def test_clean_vectors_are_inverted_better_than_noisy_ones(clean, corpora, encoder):
    probe, sample = fitted(corpora, encoder, GaussianNoise(0.5))
    noisy = by_metric(probe.score(sample))
    assert clean[2]["token_f1"].value > noisy["token_f1"].value
    assert clean[2]["bleu"].value > noisy["bleu"].value
    assert clean[2]["cosine"].value > noisy["cosine"].value


def test_scores_are_reproducible_for_a_seed_and_survive_pickling(corpora, encoder):
    tiny = {"seed": 3, "aux_size": 100, "epochs": 2, "max_targets": 10}  # a weak model is reproducible too
    probe, sample = fitted(corpora, encoder, Identity(), **tiny)
    again, _ = fitted(corpora, encoder, Identity(), **tiny)
    scores = by_metric(probe.score(sample))
    assert by_metric(again.score(sample)) == scores
    oracle, probe.embed_ = probe.embed_, None  # the audit's model cache pickles probes without their oracle
    restored = pickle.loads(pickle.dumps(probe))
    restored.embed_ = oracle
    assert by_metric(restored.score(sample)) == scores


def test_without_an_oracle_the_top_beam_is_taken_and_no_cosine_is_reported(clean):
    probe, sample, _ = clean
    oracle, probe.embed_ = probe.embed_, None
    try:
        assert "cosine" not in by_metric(probe.score(sample))
    finally:
        probe.embed_ = oracle


def test_misuse_is_reported(clean, corpora):
    probe, sample, _ = clean
    aux, aux_clean, _, _ = corpora
    no_text = Sample(sample.ids, sample.vectors, None, "v")
    with pytest.raises(ProbeError, match="texts"):
        probe.score(no_text)
    with pytest.raises(ProbeError, match="before fit"):
        GenerativeInversion().score(sample)
    with pytest.raises(ProbeError, match="expected >= 50"):
        GenerativeInversion().fit(Auxiliary(tuple(aux[:10]), aux_clean[:10]))
    for bad in ({"beam_size": 0}, {"train_seconds": -1}, {"dropout": 1.0}, {"decoder_init": "/nonexistent"},
                {"epochs": 0}, {"epochs": True}, {"bootstrap_resamples": 0}):
        with pytest.raises(ValueError):
            GenerativeInversion(**bad)
    # A time budget too short for one epoch would leave a decoder that recovers nothing: no scores.
    with pytest.raises(ProbeError, match=r"ran out after \d+ of the \d+ steps of one epoch; raise train_seconds"):
        GenerativeInversion(**(SMALL | {"train_seconds": 1e-6})).fit(Auxiliary(tuple(aux[:100]), aux_clean[:100]))


def test_outputs_are_compared_without_case_or_punctuation_spacing():
    assert normalize("Hi, this is Ann. Mail ann@example.com") == normalize("hi , this is ann. mail ann @ example. com")
    assert normalize("Crohn's disease") != normalize("crohns disease")
