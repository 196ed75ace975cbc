from pathlib import Path

import numpy as np
import pytest

from audits.encoders import BUNDLED_MODEL, LocalEncoder, resolve_model_dir
from audits.errors import EncoderError


def test_bundled_model_gives_unit_vectors_of_its_dimension(encoder):
    vectors = encoder.encode(["Please reset my password.", "The invoice is overdue."])
    assert encoder.dimension == 384
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embeddings_carry_meaning(encoder):
    a, b, c = encoder.encode(["How do I reset my password?", "I forgot my password, how can I change it?",
                              "The weather in Lisbon is sunny today."])
    assert a @ b > a @ c + 0.3


def test_batching_and_length_sorting_do_not_change_vectors(encoder):
    texts = ["short", "a somewhat longer sentence about refunds", "mid length text here", "x " * 40]
    batched = encoder.encode(texts)
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_any_model_directory_works_and_bad_ones_are_named(tmp_path):
    assert resolve_model_dir(BUNDLED_MODEL).joinpath("config.json").is_file()
    with pytest.raises(EncoderError, match="no config.json"):
        resolve_model_dir(str(tmp_path))
    with pytest.raises(EncoderError, match="not a Hugging Face model directory"):
        LocalEncoder(tmp_path)


def test_fingerprint_is_stable_and_depends_on_settings(encoder):
    same = LocalEncoder(encoder.model_dir)
    other = LocalEncoder(encoder.model_dir, max_length=64)
    assert same.fingerprint == encoder.fingerprint != other.fingerprint


def test_onnx_backend_gives_the_torch_paths_vectors(encoder):
    """The default backend must not change a vector beyond 1e-4, so an audit of a table torch
    embedded stays exact; texts of every length (truncated ones too), digits and non-ASCII."""
    from audits import corpora
    from audits.onnx_encoder import CHECK_TEXTS

    texts = list(corpora.synthetic(120, seed=11).texts) + [t.upper() for t in CHECK_TEXTS] + ["ok", "é" * 300]
    onnx = LocalEncoder(encoder.model_dir, backend="onnx")
    torch = LocalEncoder(encoder.model_dir, backend="torch")
    ours, reference = onnx.encode(texts), torch.encode(texts)
    assert onnx.backend_in_use == "onnx" and torch.backend_in_use == "torch"
    assert ours.shape == reference.shape == (len(texts), 384)
    assert np.abs(ours - reference).max() <= 1e-4
    assert onnx.fingerprint == torch.fingerprint   # caches of either's vectors serve both


def test_onnx_export_is_kept_checked_and_replaced_when_damaged(encoder, tmp_path, monkeypatch):
    import json

    from audits import onnx_encoder

    monkeypatch.setenv(onnx_encoder.CACHE_ENV, str(tmp_path / "onnx"))
    LocalEncoder(encoder.model_dir, backend="onnx").encode(["first use exports"])
    (folder,) = (tmp_path / "onnx").iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["max_abs_diff"] <= onnx_encoder.TOLERANCE and folder.stat().st_mode & 0o077 == 0
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    LocalEncoder(encoder.model_dir, backend="onnx").encode(["second use loads"])
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp
    with (folder / "model.onnx").open("r+b") as f:   # a truncated or altered file is never run
        f.truncate(1000)
    again = LocalEncoder(encoder.model_dir, backend="onnx")
    np.testing.assert_allclose(again.encode(["damaged"]), encoder.encode(["damaged"]), atol=1e-4)
    assert json.loads((folder / "meta.json").read_text())["sha256"] == onnx_encoder._sha256(folder / "model.onnx")
    assert again.backend_in_use == "onnx"


def test_auto_backend_falls_back_to_torch_with_a_reason(encoder, tmp_path, monkeypatch, caplog):
    from audits import onnx_encoder

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(onnx_encoder.CACHE_ENV, str(blocker / "onnx"))
    auto = LocalEncoder(encoder.model_dir)
    np.testing.assert_allclose(auto.encode(["still works"]), encoder.encode(["still works"]), atol=1e-4)
    assert auto.backend_in_use == "torch"
    assert "encoding with torch, not ONNX Runtime" in caplog.text and onnx_encoder.CACHE_ENV in caplog.text
    with pytest.raises(EncoderError, match="cannot keep an ONNX export"):
        LocalEncoder(encoder.model_dir, backend="onnx").encode(["asked for onnx"])
    with pytest.raises(EncoderError, match="encoder.backend"):
        LocalEncoder(encoder.model_dir, backend="tensorrt")


def test_onnx_runtime_writes_no_telemetry(tmp_path):
    """ONNX Runtime's Linux builds keep a telemetry device id and event store under ~/.cache/Microsoft
    unless told not to: a fresh process encoding with the onnx backend leaves nothing in its HOME."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    script = ("from audits.encoders import LocalEncoder, bundled_model_dir\n"
              "e = LocalEncoder(bundled_model_dir(), backend='onnx'); e.encode(['hello']); print(e.backend_in_use)")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(Path(__file__).resolve().parents[2]))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "onnx"
    left = {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}
    assert left and all(p.startswith(".cache/embwarden/onnx/") for p in left), left
