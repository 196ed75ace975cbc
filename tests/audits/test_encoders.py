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
