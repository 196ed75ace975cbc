"""repeat_query: averaging repeated queries through a noisy pipeline cancels its noise."""

from types import SimpleNamespace

import numpy as np
import pytest

from audits import corpora
from audits.audit import Auditor, ModelCache, embed_corpus
from audits.errors import ConfigError, ProbeError
from audits.pipeline import EmbeddingCache, Pipeline
from audits.probes import PROBES, make_probe, metric_ranges
from audits.probes import repeat_query as rq
from audits.probes.repeat_query import RepeatQuery
from audits.results import Sample
from audits.transforms import GaussianNoise, Identity

AUX = corpora.synthetic(500, seed=1)
CANARIES = corpora.canaries(120, seed=7)
PARAMS = {"epochs": 6, "hidden": 256, "noise_draws": 4, "bootstrap_resamples": 300}
NOISE = GaussianNoise(0.15)  # token F1 measured ~0.08 for one query, ~0.45 for the mean of 64


def canary_targets(pipeline, cache_dir):
    cache = EmbeddingCache(cache_dir / "embeddings")
    return {"canaries": embed_corpus(pipeline, CANARIES, np.random.default_rng(0), "v", "canary-", cache=cache)}


def auditor(pipeline, cache_dir):
    # Canaries are synthetic: the oracle may cache their clean encodings (never production text).
    return Auditor(pipeline, AUX, cache_dir=cache_dir, cache_oracle=True)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("repeat_query")


@pytest.fixture(scope="module")
def noisy(encoder, cache_dir):
    """One fit against the noisy pipeline, run the way the audit DAG runs probes."""
    pipeline = Pipeline(encoder, NOISE)
    targets = canary_targets(pipeline, cache_dir)
    result = auditor(pipeline, cache_dir).run("repeat_query", PARAMS, targets)
    return SimpleNamespace(pipeline=pipeline, targets=targets, cache_dir=cache_dir, result=result,
                           scores={s.metric: s for s in result.scores})


def test_averaging_repeated_queries_recovers_what_noise_hid(noisy):
    assert noisy.result.error is None and noisy.result.target == "canaries"
    scores = noisy.scores
    counts = (1, 2, 4, 8, 16, 32, 64)
    assert set(scores) == {f"token_f1_k{k}" for k in counts} | {f"secret_recovery_k{k}" for k in counts} | {"f1_gain"}
    assert set(scores) <= set(RepeatQuery.metrics)
    f1 = [scores[f"token_f1_k{k}"] for k in counts]
    assert f1[-1].value > f1[0].value + 0.15           # 64 queries leave an eighth of the noise
    assert f1[-1].ci_low > f1[0].ci_high               # separated beyond their intervals
    assert f1[3].value > f1[0].value                    # and it grows on the way
    gain = scores["f1_gain"]
    assert gain.value == pytest.approx(f1[-1].value - f1[0].value)
    assert gain.ci_low > 0 and gain.n == f1[0].n == len(CANARIES)
    for score in scores.values():
        low, high = RepeatQuery.metrics[score.metric]
        assert low <= score.ci_low <= score.value <= score.ci_high <= high


def test_a_cached_model_is_reattached_to_the_pipeline_and_scores_the_same(noisy):
    again = auditor(noisy.pipeline, noisy.cache_dir).run("repeat_query", PARAMS, noisy.targets)
    assert again.cached and again.error is None
    assert again.scores == noisy.result.scores          # a fresh auditor's oracle draws the same noise


def test_the_probe_survives_the_model_cache(noisy, tmp_path):
    probe, cached, _ = auditor(noisy.pipeline, noisy.cache_dir).fitted("repeat_query", PARAMS)
    assert cached and probe.embed_ is not None
    store = ModelCache(tmp_path)
    store.store("rq", probe)
    assert probe.embed_ is not None                     # the live probe keeps its pipeline
    loaded = store.load("rq")
    assert loaded.embed_ is None                        # a pipeline is not pickled state
    with pytest.raises(ProbeError, match="live pipeline"):
        loaded.score(noisy.targets["canaries"])
    loaded.attach(auditor(noisy.pipeline, noisy.cache_dir).oracles())
    assert loaded.score(noisy.targets["canaries"]) == list(noisy.result.scores)


def test_a_deterministic_pipeline_gains_nothing(encoder, cache_dir):
    pipeline = Pipeline(encoder, Identity())
    result = auditor(pipeline, cache_dir).run("repeat_query", {**PARAMS, "max_queries": 4},
                                              canary_targets(pipeline, cache_dir))
    assert result.error is None
    scores = {s.metric: s for s in result.scores}
    assert set(scores) == {"token_f1_k1", "token_f1_k2", "token_f1_k4", "secret_recovery_k1", "secret_recovery_k2",
                           "secret_recovery_k4", "f1_gain"}
    assert scores["token_f1_k1"].value == scores["token_f1_k2"].value == scores["token_f1_k4"].value
    gain = scores["f1_gain"]
    assert (gain.value, gain.ci_low, gain.ci_high) == (0.0, 0.0, 0.0)


def test_draws_nest_and_chunks_do_not_change_the_means(monkeypatch):
    """Draw j of every text is text index + j: the k-query mean is index + (k - 1) / 2."""
    calls = []

    def oracle(texts):
        calls.append(len(texts))
        draw = np.arange(len(texts)) // len(set(texts))
        return (np.array([float(t) for t in texts]) + draw)[:, None].repeat(3, 1).astype(np.float32)

    probe = RepeatQuery(max_queries=8)
    probe.models_ = {1: SimpleNamespace(center_=np.zeros(3))}
    probe.embed_ = oracle
    texts = [str(i) for i in range(10)]
    monkeypatch.setattr(rq, "_CHUNK_FLOATS", 8 * 3 * 4)     # four texts per call
    means = probe.averaged(texts)
    assert calls == [32, 32, 16]
    assert set(means) == {1, 2, 4, 8}
    for k, vectors in means.items():
        np.testing.assert_array_equal(vectors, np.arange(10.0)[:, None].repeat(3, 1) + (k - 1) / 2)


@pytest.mark.parametrize("params", [
    {"max_queries": 3}, {"max_queries": 0}, {"max_queries": 128}, {"max_queries": True}, {"max_queries": "64"},
    {"max_queries": 4.0}, {"max_targets": 0}, {"epochs": "10"}, {"epochs": 2.5}, {"dropout": True},
    {"layers": 3}, {"positive_weight": "heavy"},
])
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        RepeatQuery(**params)
    with pytest.raises(ConfigError, match="repeat_query"):
        make_probe("repeat_query", params)


def test_unknown_parameters_are_named():
    with pytest.raises(ValueError, match="wings"):
        RepeatQuery(wings=2)
    with pytest.raises(ConfigError, match="probes.repeat_query.wings: unknown parameter"):
        make_probe("repeat_query", {"wings": 2})
    assert RepeatQuery(epochs=3, learning_rate=1, hidden=64).bow_params == {"epochs": 3, "learning_rate": 1,
                                                                              "hidden": 64}


def test_it_is_registered_with_its_metric_ranges():
    assert PROBES["repeat_query"] is RepeatQuery
    ranges = metric_ranges()
    assert ranges["repeat_query.token_f1_k64"] == (0, 1) and ranges["repeat_query.f1_gain"] == (-1, 1)
    assert "repeat_query.secret_recovery_k64" in ranges


def test_misuse_is_reported():
    probe = RepeatQuery()
    sample = Sample(("a",), np.zeros((1, 384), np.float32), ("some text here",), "v")
    with pytest.raises(ProbeError, match="before fit"):
        probe.score(sample)
    probe.models_ = {1: SimpleNamespace(center_=np.zeros(384))}
    with pytest.raises(ProbeError, match="texts"):
        probe.score(Sample(("a",), np.zeros((1, 384), np.float32), None, "v"))
    with pytest.raises(ProbeError, match="live pipeline"):
        probe.averaged(["some text here"])
