"""pac_gaussian: Auto-PAC noise fitted on the auxiliary corpus, pinned by its artifact's hash, and
checked by the pac_privacy probe on a prior it was not calibrated on."""

import math

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from audits import corpora
from audits.audit import Auditor, embed_corpus
from audits.errors import ConfigError
from audits.pipeline import EmbeddingCache, Pipeline
from audits.transforms import (
    FitMaterial,
    TransformArtifactError,
    describe_guarantee,
    fit_spec,
    make_transform,
    needs_fit,
)
from monitors.config import TransformConfig

AUX = corpora.synthetic(900, seed=1)


@pytest.fixture(scope="module")
def material(encoder, model_cache) -> FitMaterial:
    clean = EmbeddingCache(model_cache / "embeddings").encode(encoder, list(AUX.texts))
    return FitMaterial(AUX.texts, clean, f"{encoder.fingerprint}:{AUX.hash}", seed=0)


@pytest.fixture(scope="module")
def fitted(material, tmp_path_factory) -> dict:
    return fit_spec({"kind": "pac_gaussian", "mi_bits": 1.0}, material, tmp_path_factory.mktemp("transforms"))


def test_a_spec_without_its_artifact_is_refused_with_the_way_to_fit_it():
    assert needs_fit({"kind": "pac_gaussian", "mi_bits": 1})
    transform = make_transform({"kind": "pac_gaussian", "mi_bits": 1})
    with pytest.raises(TransformArtifactError, match="versions add"):
        transform.apply(np.zeros((1, 384), np.float32), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="mi_bits"):
        make_transform({"kind": "pac_gaussian", "mi_bits": 0})
    adapter = TypeAdapter(TransformConfig)
    with pytest.raises(ValidationError, match="both"):
        adapter.validate_python({"kind": "pac_gaussian", "mi_bits": 1, "artifact": "/x.npz"})
    assert adapter.validate_python({"kind": "pac_gaussian", "mi_bits": 1}).spec()["kind"] == "pac_gaussian"


def test_fitting_writes_a_pinned_artifact_once_and_a_changed_one_is_refused(material, fitted, tmp_path_factory):
    assert fitted["artifact"].endswith(".npz") and len(fitted["sha256"]) == 64
    store = fitted["artifact"].rsplit("/", 1)[0]
    again = fit_spec({"kind": "pac_gaussian", "mi_bits": 3.0}, material, store)   # the budget is not fitted
    assert again["artifact"] == fitted["artifact"] and again["sha256"] == fitted["sha256"]
    assert fit_spec(fitted, material, store) == fitted   # a fitted spec is left alone
    copy = tmp_path_factory.mktemp("tampered") / "a.npz"
    data = bytearray(open(fitted["artifact"], "rb").read())
    data[-10] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(TransformArtifactError, match="changed"):
        make_transform({**fitted, "artifact": str(copy)}).apply(np.zeros((1, 384), np.float32),
                                                                np.random.default_rng(0))
    with pytest.raises(ValueError, match="calibration needs at least"):
        fit_spec({"kind": "pac_gaussian", "mi_bits": 1}, FitMaterial(AUX.texts[:10], material.clean[:10], "small"),
                 tmp_path_factory.mktemp("small"))


def test_it_states_a_pac_claim_not_dp_and_its_noise_is_what_it_declares(fitted, material):
    transform = make_transform(fitted)
    assert transform.guarantee() is None
    stated = describe_guarantee(transform)
    assert "PAC privacy" in stated and "not differential privacy" in stated
    clean = material.clean[:200]
    out = np.concatenate([transform.apply(clean, np.random.default_rng(i)) - clean for i in range(20)])
    declared = transform.noise_model(384).covariance(384)
    assert np.trace(np.cov(out, rowvar=False)) == pytest.approx(np.trace(declared), rel=0.05)
    # More noise along the directions where the corpus varies most (Auto-PAC's shape).
    top = transform._state["eigenvectors"][:, 0]
    last = transform._state["eigenvectors"][:, -1]
    assert float(top @ declared @ top) > 3 * float(last @ declared @ last)
    with pytest.raises(ValueError, match="calibrated for 384-d"):
        transform.apply(np.zeros((1, 12), np.float32), np.random.default_rng(0))


def test_real_outputs_stay_in_the_norm_range_and_a_dropped_transform_falls_out(fitted, material):
    transform = make_transform({**fitted, "mi_bits": 0.25})
    low, high = transform.norm_range(384)
    norms = np.linalg.norm(transform.apply(material.clean, np.random.default_rng(0)), axis=1)
    assert low <= norms.min() and norms.max() <= high
    assert not low <= 1.0 <= high   # unit vectors without the noise do not pass validation


def test_the_budget_holds_on_a_prior_it_was_not_calibrated_on(encoder, model_cache, fitted):
    pipeline = Pipeline(encoder, make_transform(fitted))
    auditor = Auditor(pipeline, AUX, seed=0, cache_dir=model_cache, cache_oracle=True)
    canaries = embed_corpus(pipeline, corpora.canaries(40, seed=5), np.random.default_rng(0), "v", "c-",
                            cache=auditor.embedding_cache)
    probe, _, _ = auditor.fitted("pac_privacy", {"prior": "texts", "secrets": 40, "repeats": 4})
    mi = {s.metric: s for s in probe.score(canaries)}["mutual_information_bits"]
    assert probe.details_.basis == "gaussian"
    assert probe.details_.mi_bits[1] <= 1.0 * 1.1   # the estimate agrees with the 1-bit budget
    assert mi.value == mi.ci_high < math.log2(40)    # and the bound is far from the cap
