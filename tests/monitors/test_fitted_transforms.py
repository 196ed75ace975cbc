"""Fitted transforms of a deployment's versions (monitors.fitted_transforms): the material they learn
from, where their artifacts go, and `embwarden versions add` fitting, pinning and verifying them."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from audits import corpora
from audits.errors import ConfigError
from audits.pipeline import EmbeddingCache
from audits.transforms import make_transform
from monitors import fitted_transforms
from monitors.candidates import with_version
from monitors.cli.main import main as cli
from monitors.config import load_config
from tests.helpers import write_config

DEP = "support-search"
SPEC = {"kind": "spectral", "keep": 8}


@pytest.fixture
def no_ledger(monkeypatch, pg_admin_url):
    missing = pg_admin_url.set(database="embwarden_no_such_db").render_as_string(hide_password=False)
    monkeypatch.setenv("EMBWARDEN_DB_URL", missing)
    monkeypatch.delenv("AIRFLOW_CONN_EMBWARDEN_DB", raising=False)


@pytest.fixture
def config_path(tmp_path, model_cache) -> Path:
    """The frontier tests' configuration (their corpus: its encodings are cached for the session)."""
    return write_config(tmp_path / "embwarden.yaml", source_url=f"sqlite:///{tmp_path}/unused.db", cache=model_cache,
                        aux_size=400, epochs=10, canaries=60)


def test_the_material_is_the_public_auxiliary_corpus_through_the_versions_encoder(config_path, encoder, model_cache):
    config = load_config(config_path)
    material = fitted_transforms.material(config, DEP, "v1")
    texts = corpora.synthetic(400, 1).texts
    assert material.texts == texts and material.seed == 1    # the attacker's seed: the corpus's
    np.testing.assert_array_equal(material.clean, EmbeddingCache(model_cache / "embeddings").encode(encoder,
                                                                                                  list(texts)))
    assert material.identity.startswith(encoder.fingerprint + ":") and material.encode is not None
    assert fitted_transforms.store(config, DEP) == config_path.parent / "artifacts" / "transforms" / DEP


def test_versions_add_fits_a_fitted_kind_and_pins_its_artifact(config_path, no_ledger, capsys):
    assert cli(["versions", "add", DEP, "spectral-keep8", "--transform", json.dumps(SPEC),
                "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    stored = yaml.safe_load(config_path.read_text())["deployments"][DEP]["versions"]["spectral-keep8"]["transform"]
    artifact = Path(stored["artifact"])
    assert stored == {**SPEC, "artifact": str(artifact), "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest()}
    assert artifact.parent == config_path.parent / "artifacts" / "transforms" / DEP
    assert f"spectral fitted on the auxiliary corpus of {DEP}" in out and f"artifact: {artifact}" in out
    transform = make_transform(load_config(config_path).deployment(DEP).versions["spectral-keep8"].transform.spec())
    assert transform.apply(np.eye(3, 384, dtype=np.float32), np.random.default_rng(0)).shape == (3, 8)

    # The same fit again (defaults written out, another keep: the pca basis does not depend on it) finds it.
    assert cli(["versions", "add", DEP, "spectral-keep16", "--transform",
                json.dumps({"kind": "spectral", "keep": 16, "basis": "pca"}), "--config", str(config_path)]) == 0
    again = load_config(config_path).deployment(DEP).versions["spectral-keep16"].transform
    assert again.artifact == str(artifact) and again.sha256 == stored["sha256"]

    # A spec naming its artifact is verified, not refitted; a missing or changed one is refused, naming the field.
    capsys.readouterr()
    assert cli(["versions", "add", DEP, "pinned", "--transform", json.dumps(stored), "--config",
                str(config_path)]) == 0
    assert "verified" in capsys.readouterr().out
    before = config_path.read_text()
    for field, value, error in [("artifact", str(artifact.with_name("gone.npz")), "not found"),
                                ("sha256", "0" * 64, "changed since the version was made")]:
        assert cli(["versions", "add", DEP, "refused", "--transform", json.dumps({**stored, field: value}),
                    "--config", str(config_path)]) == 2
        err = capsys.readouterr().err
        assert f"deployments.{DEP}.versions.refused.transform.{field}: " in err and error in err
    assert config_path.read_text() == before


def test_a_fit_the_corpus_cannot_give_is_a_configuration_error(config_path, no_ledger, capsys):
    # pac_gaussian needs twice as many texts as dimensions for its covariance: 400 < 768.
    assert cli(["versions", "add", DEP, "pac", "--transform", '{"kind": "pac_gaussian", "mi_bits": 30}',
                "--config", str(config_path)]) == 2
    err = capsys.readouterr().err
    assert "versions.pac.transform: fitting pac_gaussian on the auxiliary corpus" in err and "768" in err
    assert "pac" not in load_config(config_path).deployment(DEP).versions


def test_a_candidate_of_a_fitted_kind_is_fitted_as_versions_add_would(config_path, tmp_path):
    spec_file = tmp_path / "candidate.yaml"
    spec_file.write_text(yaml.safe_dump({"transform": SPEC}))
    config = with_version(load_config(config_path), DEP, "candidate", spec_file)
    transform = config.deployment(DEP).versions["candidate"].transform
    assert Path(transform.artifact).parent == tmp_path / "artifacts" / "transforms" / DEP and transform.sha256
    spec_file.write_text(yaml.safe_dump({"transform": {**SPEC, "artifact": str(tmp_path / "x.npz"),
                                                       "sha256": "1" * 64}}))
    with pytest.raises(ConfigError, match=r"candidate.yaml: transform\.artifact: .*not found"):
        with_version(load_config(config_path), DEP, "candidate", spec_file)
