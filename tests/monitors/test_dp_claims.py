"""A deployment that claims differential privacy, audited through its own embedding API.

The reference embedding service applies the active version's transform; the audit reaches it as an
OpenAI-compatible encoder with the transform marked `applied_by: encoder` (embwarden records and
audits the claim, it does not add noise again). An honest service passes the dp_audit threshold;
a service that claims the same guarantee but serves clean vectors is gated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from audits import corpora
from audits.audit import Auditor, embed_corpus
from audits.errors import ProbeError
from audits.http_encoders import OpenAIEncoder
from audits.pipeline import Pipeline
from audits.probes import make_probe
from audits.transforms import AppliedByEncoder, ClipGaussian, describe_guarantee, make_transform
from monitors.config import load_config
from monitors.deployments import build_pipeline
from monitors.ledger.database import session_scope
from monitors.ledger.registry import sync
from monitors.service.app import create_app
from monitors.thresholds import Levels
from monitors.verdicts import evaluate
from tests.helpers import running, write_config

DEP = "support-search"
CLAIM = {"kind": "clip_gaussian", "epsilon": 10.0, "delta": 1e-5}
DP_AUDIT = {"inputs": "texts", "queries": 3000, "threshold_queries": 1000, "chunk": 500}
GATE = Levels(gate=1.0, basis="ci_low")   # dp_audit.epsilon_ratio: {gate: 1.0, basis: ci_low}


def service_config(tmp_path: Path, ledger: str, served: dict) -> Path:
    """The service's own configuration: its active version applies `served` before answering."""
    path = write_config(tmp_path / "service.yaml", ledger)
    data = yaml.safe_load(path.read_text())
    data["deployments"][DEP]["versions"]["v3"] = {"transform": served}
    data["deployments"][DEP]["active_version"] = "v3"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with session_scope(ledger) as session:
        sync(session, load_config(path))
    return path


def audit_through(base_url: str, tmp_path: Path) -> list:
    """dp_audit of the service as a deployment claiming CLAIM, applied by the API."""
    transform = make_transform({**CLAIM, "applied_by": "encoder"})
    pipeline = Pipeline(OpenAIEncoder(base_url, DEP, batch_size=500), transform)
    aux = corpora.synthetic(200, seed=1)
    targets = {"sample": embed_corpus(pipeline, corpora.canaries(5, seed=7), np.random.default_rng(0), "v3", "c")}
    result = Auditor(pipeline, aux, seed=0, cache_dir=tmp_path / "cache").run("dp_audit", DP_AUDIT, targets)
    assert result.error is None, result.error
    return list(result.scores)


@pytest.mark.parametrize(("served", "verdict"), [(CLAIM, "pass"), ({"kind": "none"}, "gate")],
                         ids=["honest", "noise-dropped"])
def test_a_claim_the_service_does_not_deliver_is_gated(tmp_path, ledger, served, verdict):
    path = service_config(tmp_path, ledger, served)
    with running(create_app(DEP, str(path), db_url=ledger)) as base:
        scores = audit_through(base, tmp_path)
    assert evaluate(scores, {"dp_audit.epsilon_ratio": GATE}).verdict == verdict
    lower_bound = next(s.ci_low for s in scores if s.metric == "empirical_epsilon")
    if verdict == "pass":
        assert lower_bound <= CLAIM["epsilon"]
    else:   # clean vectors: the two neighbours are told apart every time
        assert lower_bound > 2 * CLAIM["epsilon"]


def test_applied_by_encoder_is_configured_stored_and_not_applied_twice(tmp_path, ledger):
    path = write_config(tmp_path / "embwarden.yaml", ledger)
    data = yaml.safe_load(path.read_text())
    data["deployments"][DEP]["versions"]["v3"] = {
        "encoder": {"kind": "openai", "url": "http://127.0.0.1:9/v1", "model": DEP, "dimension": 384},
        "transform": {**CLAIM, "applied_by": "encoder"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_config(path)
    pipeline = build_pipeline(config, DEP, "v3")
    assert isinstance(pipeline.transform, AppliedByEncoder)
    x = np.eye(3, 384, dtype=np.float32)
    assert np.array_equal(pipeline.transform.apply(x, np.random.default_rng(0)), x)   # the API added it already
    assert pipeline.transform.guarantee() == ClipGaussian(10.0).guarantee()
    with session_scope(ledger) as session:
        sync(session, config)
        from monitors.ledger.models import Version
        from monitors.ledger.registry import get_deployment, get_version

        v3: Version = get_version(session, get_deployment(session, DEP), "v3")
        v1: Version = get_version(session, get_deployment(session, DEP), "v1")
        assert v3.transform["applied_by"] == "encoder"
        assert "applied_by" not in v1.transform          # versions stored before the field stay equal
        assert v3.guarantee == describe_guarantee(pipeline.transform)
        assert v3.guarantee.endswith("(applied by the embedding API)")
    # The transform alone is out of reach: worst-case inputs cannot be audited, and say why.
    auditor = Auditor(pipeline, corpora.synthetic(50, seed=1))
    assert auditor.oracles().release is None and auditor.oracles().encode is None
    with pytest.raises(ProbeError, match="applied_by: encoder.*use inputs: texts"):
        make_probe("dp_audit").fit(auditor.oracles())
