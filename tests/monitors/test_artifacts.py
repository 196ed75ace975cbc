"""Run data and caches on a local folder and on a real S3-compatible store (SeaweedFS), through the
same calls: samples, probe results, references, reports, pruning, and the model cache's digests."""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import time

import numpy as np
import pytest

from audits import storage
from audits.audit import CACHE_KEY_ENV, ModelCache, ProbeResult
from audits.pipeline import EmbeddingCache
from audits.results import Sample, Score
from monitors import artifacts
from monitors.config.deployment import object_store_path, stored_location
from tests.object_store import CONNECTION


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return tmp_path / "artifacts"
    bucket = request.getfixturevalue("s3_bucket")
    return object_store_path(f"s3://{bucket}/artifacts", CONNECTION)


def a_sample(n: int = 20, dim: int = 8) -> Sample:
    rng = np.random.default_rng(0)
    return Sample(ids=tuple(f"r{i}" for i in range(n)), vectors=rng.normal(size=(n, dim)).astype(np.float32),
                  texts=tuple(f"text {i}" for i in range(n)), version="v1", labels=None,
                  created_at=tuple(float(i) for i in range(n)))


def test_a_sample_goes_through_the_store_whole_and_is_deleted(root):
    folder = artifacts.run_dir(root, "support search", "privacy_audit", "manual__2026-12-01T00:00:00+00:00")
    drawn = a_sample()
    artifacts.write_sample(folder, drawn)
    assert artifacts.has_sample(folder)
    back = artifacts.read_sample(stored_location(str(folder)))     # as another worker opens it from the RunRef
    assert back.ids == drawn.ids and back.texts == drawn.texts and back.created_at == drawn.created_at
    np.testing.assert_array_equal(back.vectors, drawn.vectors)
    assert artifacts.delete_sample(folder) and not artifacts.has_sample(folder)
    assert not artifacts.delete_sample(folder)
    with pytest.raises(FileNotFoundError, match="no sample"):
        artifacts.read_sample(folder)


def test_local_samples_are_owner_only(tmp_path):
    folder = artifacts.run_dir(tmp_path, "dep", "dag", "run")
    path = artifacts.write_sample(folder, a_sample())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == ["sample.npz"]    # no temporary file left behind


def test_probe_results_and_references_round_trip(root):
    folder = artifacts.run_dir(root, "dep", "privacy_audit", "run-1")
    for probe in ("bow_inversion", "candidate_inversion"):
        artifacts.write_probe_result(folder, ProbeResult(probe, "sample", (Score(probe, "f1", 0.25, 0.2, 0.3, 50),)))
    assert sorted(artifacts.read_probe_results(folder)) == ["bow_inversion", "candidate_inversion"]
    assert artifacts.read_probe_results(artifacts.run_dir(root, "dep", "privacy_audit", "none")) == {}
    assert artifacts.read_reference(root, "dep", "v1") is None and not artifacts.has_reference(root, "dep", "v1")
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    artifacts.write_reference(root, "dep", "v1", vectors)
    assert artifacts.has_reference(root, "dep", "v1")
    np.testing.assert_array_equal(artifacts.read_reference(root, "dep", "v1"), vectors)


def test_prune_removes_run_folders_past_retention_and_keeps_the_rest(root):
    for run in ("old", "new"):
        artifacts.write_probe_result(artifacts.run_dir(root, "dep", "dag", run), ProbeResult("p", "sample"))
    artifacts.write_reference(root, "dep", "v1", np.zeros((2, 2)))
    assert artifacts.prune(root, retention_days=1) == 0
    later = time.time() + 2 * 86400
    assert artifacts.prune(root, retention_days=1, now=later) == 3   # two runs and the reference
    assert storage.files(root) == []


def test_prune_never_deletes_fitted_transforms_which_versions_pin(root):
    fit = artifacts.transforms_dir(root, "dep") / "spectral-0123.npz"
    storage.write_bytes(fit, b"a pinned basis")
    artifacts.write_probe_result(artifacts.run_dir(root, "dep", "dag", "old"), ProbeResult("p", "sample"))
    assert fit.parent == root / "transforms" / "dep"
    assert artifacts.prune(root, retention_days=1, now=time.time() + 400 * 86400) == 1   # the run only
    assert [parts for parts, _ in storage.files(root)] == [("transforms", "dep", "spectral-0123.npz")]


def test_the_embedding_cache_reads_what_it_wrote_and_treats_a_broken_entry_as_a_miss(root, encoder):
    cache = EmbeddingCache(root / "cache" / "embeddings")
    texts = ["the parcel arrived late", "my card was charged twice"]
    first = cache.encode(encoder, texts)
    np.testing.assert_array_equal(cache.encode(encoder, texts), first)
    storage.write_bytes(cache.path(encoder, texts), b"\x93NUMPY truncated")
    np.testing.assert_allclose(cache.encode(encoder, texts), first, atol=1e-6)


TAMPERED: list[str] = []


def record_tampering(what: str) -> None:
    TAMPERED.append(what)


class Payload:
    """What a tampered cache entry would carry: unpickling it runs code (here, record_tampering)."""

    def __reduce__(self):
        return record_tampering, ("unpickled",)


@pytest.mark.parametrize("key", [None, "a-key-shared-by-the-workers"])
def test_a_model_entry_is_unpickled_only_when_it_matches_its_digest(root, key, monkeypatch):
    monkeypatch.delenv(CACHE_KEY_ENV, raising=False)
    cache = ModelCache(root / "cache" / "models", key=key)
    cache.store("probe-a", {"weights": [1, 2, 3]})
    assert cache.load("probe-a") == {"weights": [1, 2, 3]}

    good = storage.read_bytes(cache.path("probe-a"))
    storage.write_bytes(cache.path("probe-a"), good[: len(good) // 2])        # truncated upload
    assert cache.load("probe-a") is None

    TAMPERED.clear()
    evil = pickle.dumps(Payload())
    storage.write_bytes(cache.path("probe-a"), evil)                           # replaced pickle
    assert cache.load("probe-a") is None and TAMPERED == []
    forged = "sha256:" + hashlib.sha256(evil).hexdigest()        # and a digest forged beside it
    storage.write_bytes(cache.digest_path("probe-a"), forged.encode())
    if key:
        assert cache.load("probe-a") is None and TAMPERED == []                # the HMAC needs the key
    else:
        cache.load("probe-a")
        assert TAMPERED == ["unpickled"]   # without a key the store's write access is the protection (documented)
    TAMPERED.clear()

    storage.remove(cache.digest_path("probe-a"))                               # an entry without a digest
    storage.write_bytes(cache.path("probe-a"), good)
    assert cache.load("probe-a") is None
    assert ModelCache(root / "cache" / "models", key="another key").load("probe-a") is None


def test_the_key_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_KEY_ENV, "k1")
    ModelCache(tmp_path).store("m", [1])
    assert ModelCache(tmp_path).load("m") == [1]
    monkeypatch.setenv(CACHE_KEY_ENV, "k2")
    assert ModelCache(tmp_path).load("m") is None
    monkeypatch.delenv(CACHE_KEY_ENV)
    assert storage.read_bytes(tmp_path / "m.digest").startswith(b"hmac-sha256:")
    assert os.listdir(tmp_path) and ModelCache(tmp_path).load("m") is None


def test_an_object_store_url_without_its_provider_is_refused_at_load(tmp_path):
    from monitors.config.deployment import ArtifactsConfig

    with pytest.raises(ValueError, match="no object-store filesystem is registered for nosuch://"):
        ArtifactsConfig(root="nosuch://bucket/prefix")
    assert ArtifactsConfig(root="s3://bucket/prefix", connection="embwarden_store").root == "s3://bucket/prefix"
