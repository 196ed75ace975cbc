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
