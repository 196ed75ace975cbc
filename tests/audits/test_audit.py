"""Auditor: fitted attack models are cached per (pipeline, corpus, probe setup) and reused."""

import shutil

import numpy as np
import pytest

from audits import corpora
from audits.audit import Auditor, embed_corpus
from audits.pipeline import Pipeline
from audits.transforms import GaussianNoise, Identity

AUX = corpora.synthetic(300, seed=1)
TARGETS = corpora.synthetic(40, seed=2)
BOW = {"epochs": 5, "bootstrap_resamples": 200}


@pytest.fixture
def targets(encoder):
    return {"sample": embed_corpus(Pipeline(encoder, Identity()), TARGETS, np.random.default_rng(0), "v", "t")}


def test_a_second_run_loads_the_fitted_model_and_scores_the_same(encoder, targets, tmp_path):
    first = Auditor(Pipeline(encoder, Identity()), AUX, cache_dir=tmp_path).run("bow_inversion", BOW, targets)
    second = Auditor(Pipeline(encoder, Identity()), AUX, cache_dir=tmp_path).run("bow_inversion", BOW, targets)
    assert (first.cached, second.cached) == (False, True) and first.error is None
    assert second.scores == first.scores
    assert len(list((tmp_path / "models").glob("bow_inversion-*.pkl"))) == 1


def test_a_naive_model_is_shared_by_every_transform(encoder, targets, tmp_path):
    first = Auditor(Pipeline(encoder, GaussianNoise(0.01)), AUX, cache_dir=tmp_path, naive=True)
    assert first.run("bow_inversion", BOW, targets).cached is False
    naive = Auditor(Pipeline(encoder, GaussianNoise(0.05)), AUX, cache_dir=tmp_path, naive=True)
    assert naive.run("bow_inversion", BOW, targets).cached is True


@pytest.fixture(scope="module")
def noisy_fit(encoder, tmp_path_factory):
    """A cache holding the model of the noisy pipeline, fitted once for every change set against it."""
    folder = tmp_path_factory.mktemp("noisy-fit")
    targets = {"sample": embed_corpus(Pipeline(encoder, Identity()), TARGETS, np.random.default_rng(0), "v", "t")}
    Auditor(Pipeline(encoder, GaussianNoise(0.01)), AUX, cache_dir=folder).run("bow_inversion", BOW, targets)
    return folder


@pytest.mark.parametrize("change", ["params", "transform", "corpus", "seed", "attacker"])
def test_any_change_of_setup_is_a_fresh_fit(encoder, targets, tmp_path, change, noisy_fit):
    shutil.copytree(noisy_fit, tmp_path, dirs_exist_ok=True)
    pipeline = Pipeline(encoder, GaussianNoise(0.02 if change == "transform" else 0.01))
    auditor = Auditor(pipeline, corpora.synthetic(301, seed=1) if change == "corpus" else AUX,
                      seed=1 if change == "seed" else 0, cache_dir=tmp_path, naive=change == "attacker")
    params = {**BOW, "epochs": 6} if change == "params" else BOW
    assert auditor.run("bow_inversion", params, targets).cached is False
    assert len(list((tmp_path / "models").glob("*.pkl"))) == 2


def test_the_oracle_is_reattached_to_a_cached_model(encoder, tmp_path):
    pipeline = Pipeline(encoder, Identity())
    targets = {"canaries": embed_corpus(pipeline, TARGETS, np.random.default_rng(0), "v", "c")}
    params = {"candidates": 10, "max_trials": 6, "bootstrap_resamples": 200}
    first = Auditor(pipeline, AUX, cache_dir=tmp_path).run("candidate_inversion", params, targets)
    second = Auditor(pipeline, AUX, cache_dir=tmp_path).run("candidate_inversion", params, targets)
    assert second.cached and second.error is None and second.scores == first.scores
    assert second.target == "canaries"


def test_a_probe_without_fitting_targets_reports_an_error(encoder):
    sample = embed_corpus(Pipeline(encoder, Identity()), corpora.Corpus(("some text", "more text")),
                          np.random.default_rng(0), "v", "s")
    result = Auditor(Pipeline(encoder, Identity()), AUX).run("candidate_inversion", {}, {"sample": sample})
    assert result.scores == () and "needs targets with secrets, texts" in result.error


def test_a_corrupt_cache_entry_is_refitted(encoder, targets, tmp_path):
    auditor = Auditor(Pipeline(encoder, Identity()), AUX, cache_dir=tmp_path)
    auditor.run("bow_inversion", BOW, targets)
    entry = next((tmp_path / "models").glob("*.pkl"))
    entry.write_bytes(b"truncated")
    again = Auditor(Pipeline(encoder, Identity()), AUX, cache_dir=tmp_path).run("bow_inversion", BOW, targets)
    assert again.cached is False and again.error is None


def test_labelled_targets_are_also_scored_per_segment(encoder, tmp_path):
    """Canaries carry their category: bow_inversion says which kind of text leaks most."""
    pipeline = Pipeline(encoder, Identity())
    labelled = {"canaries": embed_corpus(pipeline, corpora.synthetic(120, seed=2), np.random.default_rng(0), "v", "c")}
    result = Auditor(pipeline, AUX, cache_dir=tmp_path).run("bow_inversion", BOW, labelled)
    by_key = {s.metric: s for s in result.scores}
    counts = {c: labelled["canaries"].labels.count(c) for c in set(labelled["canaries"].labels)}
    segments = {c for c, n in counts.items() if n >= 20}
    assert segments and {f"token_f1[{c}]" for c in segments} <= set(by_key)
    for c in segments:
        assert by_key[f"token_f1[{c}]"].n == counts[c]
    assert not {m for m in by_key if "[" in m} - {f"{m}[{c}]" for m in ("token_precision", "token_recall",
                                                                          "token_f1", "secret_recovery")
                                                   for c in segments}
    # the whole sample's score is the mean of its segments' scores, weighted by their size
    assert by_key["token_f1"].value == pytest.approx(
        sum(by_key[f"token_f1[{c}]"].value * counts[c] for c in counts) / sum(counts.values()), abs=1e-9)
