"""audits.layers: one layer of a local encoder as an encoder, every layer from one forward pass, and a
layer-wise audit with the real bundled MiniLM (6 transformer layers + the embedding output)."""

import numpy as np
import pytest
import torch

from audits import corpora
from audits.corpus import corpus_hash
from audits.encoders import LocalEncoder
from audits.errors import ConfigError, EncoderError
from audits.layers import LayerEncoder, LayerStack, audit_layers, encode_layers, layer_count, select_layers

TEXTS = ["Please reset my password.", "short", "The invoice for account 4471 is overdue since March.",
         "short", "x " * 40, "Maria Okafor was diagnosed with asthma and needs a refund."]
# Small and quick: the MLP alone, a few epochs (the CLI tests fit the same, so they load these models).
PARAMS = {"bow_inversion": {"epochs": 3, "bootstrap_resamples": 100, "stack": False},
          "attribute_inference": {"attribute": "has_condition", "bootstrap_resamples": 100}}


def by_hand(encoder: LocalEncoder, text: str, layer: int) -> np.ndarray:
    """One text alone, no batching or padding: hidden_states[layer], mean-pooled, normalised."""
    tokenizer, model = encoder._model
    batch = tokenizer([text], truncation=True, max_length=encoder.max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch, output_hidden_states=True).hidden_states[layer][0]
    pooled = hidden.mean(0)
    return (pooled / pooled.norm()).numpy()


def test_the_last_layer_is_the_base_encoders_output_and_one_pass_serves_every_layer(encoder):
    assert layer_count(encoder) == 7
    calls = []
    small = LocalEncoder(encoder.model_dir, batch_size=2)   # several batches, padded ones among them
    hook = small._model[1].register_forward_hook(lambda *_: calls.append(1))
    try:
        every = encode_layers(small, TEXTS)
    finally:
        hook.remove()
    unique = len(set(TEXTS))
    assert every.shape == (7, len(TEXTS), 384) and every.dtype == np.float32
    assert len(calls) == -(-unique // 2)               # one model call per batch, for all seven layers
    np.testing.assert_allclose(every[-1], encoder.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(every, axis=2), 1.0, atol=1e-5)
    for layer in (0, 3):                                # the same numbers as a layer encoded on its own
        np.testing.assert_allclose(LayerEncoder(encoder, layer).encode(TEXTS), every[layer], atol=1e-5)
    for layer in range(7):                              # and as computed by hand, one text at a time
        for i in (0, 4):
            np.testing.assert_allclose(every[layer, i], by_hand(encoder, TEXTS[i], layer), atol=1e-5)
    assert not np.allclose(every[0], every[-1], atol=1e-2)     # the layers do differ
    np.testing.assert_array_equal(every[:, 1], every[:, 3])   # a text given twice is encoded once


def test_a_layer_is_an_encoder_with_its_own_fingerprint_and_unknown_layers_are_refused(encoder):
    views = LayerStack(encoder).views()
    assert [v.name for v in views] == ["embeddings", *(f"layer {i}" for i in range(1, 6)), "output"]
    assert len({v.fingerprint for v in views} | {encoder.fingerprint}) == 8
    assert all(v.dimension == 384 for v in views)
    assert LayerEncoder(encoder, 3).fingerprint == views[3].fingerprint      # stable, keys the caches
    with pytest.raises(ConfigError, match="layer 7 does not exist; this model has layers 0 to 6"):
        LayerEncoder(encoder, 7)
    assert select_layers("all", 7) == tuple(range(7)) and select_layers("0,6,2-3", 7) == (0, 2, 3, 6)
    for bad, message in (("9", "layer 9 does not exist"), ("last", "'last' is not a layer"),
                         ("4-2", "runs backwards"), ("-1", "'-1' is not a layer")):
        with pytest.raises(ConfigError, match=message):
            select_layers(bad, 7)
    stack = LayerStack(encoder, [0, 6])
    words = ["asthma", "refund", "invoice"]      # what bow_inversion's oracle re-embeds, per layer
    np.testing.assert_allclose(stack.view(6).encode(words), encoder.encode(words), atol=1e-5)
    np.testing.assert_allclose(stack.view(0).encode(words), views[0].encode(words), atol=1e-5)
    assert stack.forward_passes == 1                      # the second layer's call was served by the first's pass
    with pytest.raises(ValueError, match="not one of this stack's layers"):
        LayerEncoder(encoder, 3, stack=stack)
    with pytest.raises(EncoderError, match="out of reach"):
        audit_layers(object(), corpora.synthetic(30, 1), corpora.synthetic(5, 2))


def test_the_audit_scores_every_layer_from_one_pass_per_corpus_and_caches_only_public_text(encoder, model_cache):
    aux = corpora.synthetic(300, 1)
    targets = corpora.synthetic(40, 11)      # passed as not synthetic: like production text, never cached
    result = audit_layers(encoder, aux, targets, params=PARAMS, cache_dir=model_cache)
    assert len(result) == 7 and [row.layer for row in result] == list(range(7))
    assert result.probes == ("bow_inversion", "attribute_inference") and result.layer_count == 7
    # The attacker's texts and the targets: each through the model once for all seven layers (the
    # attacker's texts not at all when an earlier run cached them).
    assert result.forward_passes in (1, 2)
    for row in result:
        assert row.errors == {}
        assert {"token_precision", "token_recall", "token_f1", "secret_recovery"} <= {
            s.metric for s in row.scores if s.probe == "bow_inversion"}
        for score in (row.token_f1, row.auc):
            assert 0 <= score.ci_low <= score.value <= score.ci_high <= 1 and score.n > 0
    assert result.leakiest().token_f1.value == max(row.token_f1.value for row in result)
    assert max(row.token_f1.value for row in result) > 0.25     # MiniLM's layers leak words
    data = result.to_dict()
    assert len(data["layers"]) == 7 and data["layers"][6]["name"] == "output"

    for layer in range(7):
        folder = model_cache / "embeddings" / f"{encoder.fingerprint}-layer{layer}"
        names = {p.name for p in folder.iterdir()}
        assert f"{corpus_hash(list(aux.texts))}-300.npy" in names
        assert f"{corpus_hash(list(targets.texts))}-40.npy" not in names

    again = audit_layers(encoder, aux, targets, probes=["bow_inversion"], params=PARAMS, cache_dir=model_cache,
                         layers=[0, 6])
    assert [row.layer for row in again] == [0, 6] and again.forward_passes == 1   # the targets only
    assert again.layers[1].token_f1 == result.layers[6].token_f1                  # the fitted models reused
    with pytest.raises(ConfigError, match="do not run per layer"):
        audit_layers(encoder, aux, targets, probes=["dp_audit"])
    with pytest.raises(ConfigError, match="the targets have no labels"):
        audit_layers(encoder, aux, corpora.Corpus(("plain text",)), probes=["attribute_inference"])
