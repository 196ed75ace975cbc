"""candidate_inversion against the real MiniLM pipeline, used as the attacker's oracle."""

import numpy as np
import pytest

from audits.corpus import generate_messages
from audits.errors import ConfigError, ProbeError
from audits.pipeline import Pipeline
from audits.probes import make_probe
from audits.probes.base import Auxiliary
from audits.results import Sample
from audits.transforms import GaussianNoise, Identity

AUX = generate_messages(300, seed=1)
TARGETS = generate_messages(40, seed=2)


def run(encoder, transform, seed=0):
    pipeline = Pipeline(encoder, transform)
    rng = np.random.default_rng(5)
    sample = Sample(tuple(map(str, range(len(TARGETS)))), pipeline.embed([m.text for m in TARGETS], rng),
                    tuple(m.text for m in TARGETS), "v", secrets=tuple(m.secrets for m in TARGETS))
    aux = Auxiliary(tuple(m.text for m in AUX), np.zeros((len(AUX), 1)), secrets=tuple(m.secrets for m in AUX),
                    embed=lambda texts: pipeline.embed(texts, rng))
    probe = make_probe("candidate_inversion", {"candidates": 20, "max_trials": 12, "bootstrap_resamples": 300},
                       seed=seed)
    return {s.metric: s for s in probe.fit(aux).score(sample)}


def test_true_secret_ranks_first_on_clean_vectors_and_noise_hides_it(encoder):
    clean = run(encoder, Identity())
    noisy = run(encoder, GaussianNoise(0.3))
    assert clean["top1"].value >= 0.9 and clean["top1"].n == 12
    assert clean["top5"].value >= clean["top1"].value
    assert clean["exposure_bits"].value > np.log2(20) - 0.5          # close to the maximum, log2(#candidates)
    assert noisy["exposure_bits"].ci_high < clean["exposure_bits"].ci_low
    assert clean["top1"].ci_low <= clean["top1"].value <= clean["top1"].ci_high


def test_reproducible_for_a_seed(encoder):
    assert run(encoder, Identity(), seed=4) == run(encoder, Identity(), seed=4)


def test_needs_an_oracle_and_known_secrets():
    probe = make_probe("candidate_inversion")
    with pytest.raises(ProbeError, match="embedding oracle"):
        probe.fit(Auxiliary(("a",), np.zeros((1, 2))))
    probe.fit(Auxiliary(("a",), np.zeros((1, 2)), embed=lambda texts: np.ones((len(texts), 2))))
    with pytest.raises(ProbeError, match="known secrets"):
        probe.score(Sample(("1",), np.ones((1, 2), np.float32), ("text",), "v"))
    with pytest.raises(ProbeError, match="no target has a secret"):
        probe.score(Sample(("1",), np.ones((1, 2), np.float32), ("text",), "v", secrets=({"email": "x"},)))
    with pytest.raises(ConfigError, match=r"probes.candidate_inversion.candidates: .* equal to 2 \(found 1\)"):
        make_probe("candidate_inversion", {"candidates": 1})


def test_queries_each_distinct_text_once_and_stops_where_the_truth_decides(encoder):
    """A deterministic pipeline gives a trial's own text back as the target's vector (cosine 1, which
    no candidate can beat): one query per trial. With noise every candidate is queried, once each,
    in one batch across trials."""
    queried: list[list[str]] = []

    def run_counting(transform):
        pipeline = Pipeline(encoder, transform)
        rng = np.random.default_rng(5)
        texts = [m.text for m in TARGETS] * 2        # every target twice: shared variants
        sample = Sample(tuple(map(str, range(len(texts)))), pipeline.embed(texts, rng), tuple(texts), "v",
                        secrets=tuple(m.secrets for m in TARGETS) * 2)

        def oracle(batch):
            queried.append(list(batch))
            return pipeline.embed(batch, rng)

        aux = Auxiliary(tuple(m.text for m in AUX), np.zeros((len(AUX), 1)),
                        secrets=tuple(m.secrets for m in AUX), embed=oracle)
        probe = make_probe("candidate_inversion", {"candidates": 12, "max_trials": 40}, seed=0)
        return {s.metric: s for s in probe.fit(aux).score(sample)}

    clean = run_counting(Identity())
    assert len(queried) == 1 and len(queried[0]) == len(set(queried[0])) <= len(TARGETS)
    assert clean["top1"].value == 1.0 and clean["exposure_bits"].value == pytest.approx(np.log2(12))
    queried.clear()
    noisy = run_counting(GaussianNoise(0.05))
    truths, candidates = queried
    assert len(truths) == len(set(truths)) and len(candidates) == len(set(candidates))
    assert len(candidates) > 8 * len(truths)
    assert noisy["top1"].n == clean["top1"].n
