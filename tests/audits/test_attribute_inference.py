"""attribute_inference on real MiniLM vectors of synthetic messages."""

import numpy as np
import pytest

from audits.corpus import generate_messages
from audits.errors import ConfigError, ProbeError
from audits.probes import make_probe
from audits.probes.base import Auxiliary
from audits.results import Sample

AUX = generate_messages(400, seed=1)
TARGETS = generate_messages(120, seed=2)


@pytest.fixture(scope="module")
def vectors(encoder):
    return encoder.encode([m.text for m in AUX]), encoder.encode([m.text for m in TARGETS])


def scores(vectors, attribute="label", sigma=0.0, seed=0):
    aux_v, tgt_v = vectors
    rng = np.random.default_rng(3)
    aux_v, tgt_v = aux_v + rng.normal(0, sigma, aux_v.shape), tgt_v + rng.normal(0, sigma, tgt_v.shape)
    aux = Auxiliary(tuple(m.text for m in AUX), aux_v, labels=tuple(m.category for m in AUX),
                    secrets=tuple(m.secrets for m in AUX))
    sample = Sample(tuple(map(str, range(len(TARGETS)))), tgt_v.astype(np.float32), None, "v",
                    secrets=tuple(m.secrets for m in TARGETS), labels=tuple(m.category for m in TARGETS))
    probe = make_probe("attribute_inference", {"attribute": attribute, "bootstrap_resamples": 300}, seed=seed)
    return {s.metric: s for s in probe.fit(aux).score(sample)}


def test_category_and_condition_are_inferred_and_noise_hides_them(vectors):
    clean, noisy = scores(vectors), scores(vectors, sigma=1.0)
    assert clean["auc"].value > 0.95 and clean["advantage"].value > 0.5
    assert noisy["auc"].value < clean["auc"].ci_low
    assert clean["auc"].ci_low <= clean["auc"].value <= clean["auc"].ci_high and clean["auc"].n == len(TARGETS)
    condition = scores(vectors, attribute="has_condition")
    assert condition["auc"].value > 0.9


def test_reproducible_for_a_seed(vectors):
    assert scores(vectors, seed=5) == scores(vectors, seed=5)


def test_clear_errors():
    with pytest.raises(ConfigError, match=r"probes.attribute_inference.attribute: String should match .*label\|has_"):
        make_probe("attribute_inference", {"attribute": "gender"})
    probe = make_probe("attribute_inference")
    with pytest.raises(ProbeError, match="auxiliary corpus has no labels"):
        probe.fit(Auxiliary(("a", "b"), np.zeros((2, 3))))
    probe.fit(Auxiliary(("a", "b", "c", "d"), np.eye(4, 3), labels=("x", "y", "x", "y")))
    with pytest.raises(ProbeError, match="sample has no labels"):
        probe.score(Sample(("1",), np.ones((1, 3), np.float32), None, "v"))
