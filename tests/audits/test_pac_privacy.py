"""pac_privacy: a black-box PAC bound through the live pipeline, beside the empirical attacks."""

import math

import numpy as np
import pytest

from audits import corpora
from audits.audit import Auditor, embed_corpus
from audits.errors import ConfigError
from audits.pipeline import Pipeline
from audits.probes import make_probe
from audits.probes.base import Auxiliary
from audits.results import Sample
from audits.transforms import ClipGaussian, Identity, NoiseModel, VonMisesFisher

AUX = corpora.synthetic(300, seed=1)
CANARIES = corpora.canaries(40, seed=77)


def audit(encoder, model_cache, transform, **params):
    """The probe fitted as an audit fits it (oracle attached), scored on canaries."""
    pipeline = Pipeline(encoder, transform)
    auditor = Auditor(pipeline, AUX, seed=0, cache_dir=model_cache, cache_oracle=True)
    canaries = embed_corpus(pipeline, CANARIES, np.random.default_rng(0), "v", "c-", cache=auditor.embedding_cache)
    probe, _, _ = auditor.fitted("pac_privacy", {"secrets": 32, "repeats": 4, "templates": 2, **params})
    return {s.metric: s for s in probe.score(canaries)}, probe


def test_a_pipeline_without_noise_gets_the_cap_and_certain_success(encoder, model_cache):
    scores, probe = audit(encoder, model_cache, Identity())
    mi = scores["mutual_information_bits"]
    assert mi.value == mi.ci_high == pytest.approx(math.log2(32))
    assert scores["posterior_success"].ci_high == 1.0
    probe.score(embed_corpus(Pipeline(encoder, Identity()), CANARIES, np.random.default_rng(0), "v", "c-"))
    assert probe.details_.basis == "deterministic"
    assert "deterministic" in probe.details_.explanation()


def test_strong_dp_noise_bounds_what_any_attacker_learns_and_the_bound_holds_empirically(encoder, model_cache):
    transform = ClipGaussian(epsilon=10)   # sigma 1.0 per coordinate: retrieval is gone
    scores, probe = audit(encoder, model_cache, transform, prior="surname")
    mi, posterior = scores["mutual_information_bits"], scores["posterior_success"]
    assert probe.details_.basis == "gaussian"
    assert mi.ci_high < 2.0 < math.log2(32)
    assert posterior.ci_high < 0.75
    # An attacker who knows the template and the 32 surnames, and averages 4 oracle answers per
    # candidate, names the secret of fresh outputs: its success must stay under the bound.
    rng = np.random.default_rng(9)
    target = next(t for t, s in zip(CANARIES.texts, CANARIES.secrets, strict=True) if s.get("surname", "") in t)
    truth = next(s["surname"] for t, s in zip(CANARIES.texts, CANARIES.secrets, strict=True) if t == target)
    names = sorted({s["surname"] for s in AUX.secrets if "surname" in s})[:32]
    candidates = [target.replace(truth, n) for n in names]
    clean = encoder.encode(candidates)
    centroids = np.stack([transform.apply(np.repeat(clean[i:i + 1], 4, 0), rng).mean(0) for i in range(32)])
    secrets = rng.integers(32, size=2000)
    outputs = transform.apply(clean[secrets], rng)
    guessed = np.argmin(((outputs[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (guessed == secrets).mean() <= posterior.ci_high


def test_noise_that_is_not_gaussian_gets_no_bound_below_the_cap(encoder, model_cache):
    scores, probe = audit(encoder, model_cache, VonMisesFisher(epsilon=600), prior="texts")
    assert probe.details_.basis == "not_gaussian"
    assert scores["mutual_information_bits"].ci_high == pytest.approx(math.log2(32))


def test_a_dropped_noise_is_caught_the_claim_is_not_taken_on_trust():
    # The transform claims Gaussian noise, the pipeline adds none: the bound is the cap.
    rng = np.random.default_rng(0)
    table = {f"text {i} with Smith": rng.standard_normal(16) for i in range(8)}
    table.update({t.replace("Smith", n): rng.standard_normal(16) for t in list(table) for n in ("Jones", "Brown")})
    aux = Auxiliary(("x", "y"), np.zeros((2, 16), np.float32), secrets=({"surname": "Jones"}, {"surname": "Brown"}),
                    embed=lambda texts: np.stack([table[t] for t in texts]), noise=lambda d: NoiseModel(0.01))
    probe = make_probe("pac_privacy", {"secrets": 3, "repeats": 3, "templates": 1}).fit(aux)
    sample = Sample(("a",), np.zeros((1, 16), np.float32), ("text 0 with Smith",), "v",
                    secrets=({"name": "Ann Smith", "surname": "Smith"},))
    scores = {s.metric: s for s in probe.score(sample)}
    assert probe.details_.basis == "deterministic"
    assert scores["mutual_information_bits"].ci_high == pytest.approx(math.log2(3))


def test_parameters_are_checked_when_the_configuration_loads():
    with pytest.raises(ConfigError, match="secrets"):
        make_probe("pac_privacy", {"secrets": 4096, "repeats": 1024})
    with pytest.raises(ConfigError, match="prior"):
        make_probe("pac_privacy", {"prior": "no such/kind"})
    with pytest.raises(ConfigError, match="repeats"):
        make_probe("pac_privacy", {"repeats": 1})
    assert make_probe("pac_privacy", {"prior": "texts"}).needs == ("texts",)


def test_details_hold_numbers_only(encoder, model_cache):
    _, probe = audit(encoder, model_cache, ClipGaussian(epsilon=30), prior="texts")
    text = repr(probe.details_.to_dict())
    assert not any(t[:20] in text for t in CANARIES.texts)


def test_noise_applied_inside_an_embedding_api_is_never_taken_as_declared():
    from audits.transforms import AppliedByEncoder

    assert AppliedByEncoder(ClipGaussian(epsilon=10)).noise_model(384) is None
    assert ClipGaussian(epsilon=10).noise_model(384) is not None
