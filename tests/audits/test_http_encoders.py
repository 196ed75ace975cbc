"""Encoders behind HTTP embedding APIs, against real servers on loopback that serve the bundled model
with OpenAI's and text-embeddings-inference's request and response shapes."""

import logging

import numpy as np
import pytest
import yaml

from audits import corpora
from audits.audit import Auditor, embed_corpus
from audits.errors import ConfigError, EncoderError
from audits.http_encoders import OpenAIEncoder, TEIEncoder
from audits.pipeline import Pipeline
from audits.transforms import Identity
from monitors.config import EmbwardenConfig, load_config
from monitors.deployments import build_pipeline
from tests.embedding_servers import serving
from tests.receivers import free_port

TEXTS = ["Please reset my password.", "The invoice is overdue.", "Call Ana Souza at 555-0142.",
         "Where is my parcel?", "Refund the duplicate charge, please."]
FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.5}  # keeps retry tests quick


def make(api: str, url: str, **settings):
    settings = {**FAST, **settings}
    return OpenAIEncoder(url, settings.pop("model", "minilm"), **settings) if api == "openai" \
        else TEIEncoder(url, **settings)


@pytest.fixture(params=["openai", "tei"])
def api(request) -> str:
    return request.param


def test_vectors_through_each_api_are_the_local_models(api, encoder):
    with serving(api, encoder, reverse=True) as server, make(api, server.url) as remote:
        vectors = remote.encode(TEXTS)
        assert remote.dimension == encoder.dimension == 384
    assert vectors.dtype == np.float32 and vectors.shape == (5, 384)
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS), atol=1e-6)  # in input order, whatever `data`'s order
    assert server.requests[0].path == {"openai": "/v1/embeddings", "tei": "/embed"}[api]


def test_the_request_has_each_apis_shape(encoder):
    with serving("openai", encoder) as server, OpenAIEncoder(server.url + "/v1", "text-embedding-3-small",
                                                             dimensions=128) as remote:
        assert remote.encode(TEXTS[:2]).shape == (2, 128) and remote.dimension == 128
    assert server.requests[0].body == {"input": TEXTS[:2], "model": "text-embedding-3-small", "dimensions": 128}
    with serving("tei", encoder) as server, TEIEncoder(server.url + "/embed", normalize=False) as remote:
        remote.encode(TEXTS[:1])
    assert server.requests[0].body == {"inputs": TEXTS[:1], "normalize": False, "truncate": True}


def test_texts_go_in_batches_and_come_back_in_order(api, encoder):
    texts = [f"message number {i} about order {i * 7}" for i in range(10)]
    with serving(api, encoder) as server, make(api, server.url, batch_size=4) as remote:
        vectors = remote.encode(texts + texts[:1])  # no deduplication: the API may add noise per call
    assert server.batches() == [4, 4, 3]
    np.testing.assert_allclose(vectors[:10], encoder.encode(texts), atol=1e-6)


def test_the_dimension_is_configured_or_asked_once(encoder):
    with serving("tei", encoder) as server:
        with make("tei", server.url, dimension=384) as configured:
            assert configured.dimension == 384 and server.requests == []
        with make("tei", server.url) as probed:
            assert probed.dimension == probed.dimension == 384
            assert len(server.requests) == 1
            assert probed.encode([]).shape == (0, 384) and len(server.requests) == 1


def test_429_and_500_are_retried_until_an_answer_comes(api, encoder, caplog):
    caplog.set_level(logging.INFO, logger="audits.http_encoders")
    with serving(api, encoder, fail=[429, 500], token="sk-test-secret") as server, \
            make(api, server.url, api_key="sk-test-secret", max_retries=2) as remote:
        vectors = remote.encode(TEXTS)
    assert len(server.requests) == 3  # the server saw both retries
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS), atol=1e-6)
    assert "HTTP 429" in caplog.text and "HTTP 500" in caplog.text and "retrying" in caplog.text
    assert "sk-test-secret" not in caplog.text and not any(t in caplog.text for t in TEXTS)


def test_retry_after_is_honoured(encoder):
    with serving("openai", encoder, fail=[429], retry_after="1") as server, \
            make("openai", server.url, max_backoff_seconds=5) as remote:
        remote.encode(TEXTS[:1])
    first, second = server.requests
    assert second.at - first.at >= 0.9


def test_exhausted_retries_give_the_last_status(api, encoder):
    with serving(api, encoder, fail=[503] * 5) as server, make(api, server.url, max_retries=2) as remote:
        with pytest.raises(EncoderError, match=r"gave up after 3 attempts; the last: HTTP 503: simulated HTTP 503"):
            remote.encode(TEXTS)
    assert len(server.requests) == 3


def test_timeouts_are_retried_then_reported(encoder):
    encoder.encode(TEXTS[:2])  # the model loads now, not inside the answer that must come in time
    with serving("tei", encoder, delay=2.0, delay_calls=1) as server, \
            make("tei", server.url, timeout_seconds=0.5, max_retries=1) as remote:
        assert remote.encode(TEXTS[:2]).shape == (2, 384)
        assert len(server.requests) == 2
        server.delay_calls = 10
        with pytest.raises(EncoderError, match=r"tei encoder http://127.0.0.1:\d+/embed: gave up after 2 attempts; "
                                               r"the last: no answer within 0.5 s"):
            remote.encode(TEXTS[:2])


def test_an_unreachable_api_is_named():
    with make("tei", f"http://127.0.0.1:{free_port()}", max_retries=1) as remote:
        with pytest.raises(EncoderError, match=r"gave up after 2 attempts; the last: cannot reach it \(ConnectError"):
            remote.encode(TEXTS[:1])


def test_other_4xx_fail_at_once_with_the_apis_message(encoder):
    with serving("tei", encoder, max_batch=2) as server, make("tei", server.url, batch_size=4) as remote:
        with pytest.raises(EncoderError, match=r"refused the request \(HTTP 413: batch size 4 > maximum allowed "
                                               r"batch size 2\)"):
            remote.encode(TEXTS)
    assert len(server.requests) == 1


def test_a_missing_or_wrong_key_is_not_retried(api, encoder):
    with serving(api, encoder, token="sk-right") as server:
        rejected = r"credentials rejected \(HTTP 401: Incorrect API key provided\)"
        with make(api, server.url, api_key="sk-wrong") as remote, pytest.raises(EncoderError, match=rejected) as err:
            remote.encode(TEXTS)
        assert "sk-wrong" not in str(err.value) and "sk-right" not in str(err.value)
        with make(api, server.url) as remote, pytest.raises(EncoderError, match="the API needs a key"):
            remote.encode(TEXTS)
    assert len(server.requests) == 2


def test_another_dimension_than_configured_or_than_before_is_an_error(api, encoder):
    with serving(api, encoder, dimension=256) as server:
        with make(api, server.url, dimension=384) as remote, pytest.raises(
                EncoderError, match=r"answered vectors of dimension 256, expected 384 \(the configured dimension\)"):
            remote.encode(TEXTS)
        server.dimension = None
        with make(api, server.url, batch_size=2) as remote:
            remote.encode(TEXTS[:2])
            server.dimension = 128
            with pytest.raises(EncoderError, match=r"dimension 128, expected 384 \(the dimension of its first answ"):
                remote.encode(TEXTS)


def test_an_answer_with_too_few_vectors_is_an_error(api, encoder):
    with serving(api, encoder, drop=1) as server, make(api, server.url) as remote, \
            pytest.raises(EncoderError, match=r"answered 4 vectors for 5 texts"):
        remote.encode(TEXTS)


def test_the_rate_limit_spaces_requests(encoder):
    with serving("openai", encoder) as server, make("openai", server.url, batch_size=1, requests_per_second=5) as r:
        r.encode(TEXTS[:1])  # opens the connection: the first arrival comes later than it left
        r.encode(TEXTS[:4])
    gaps = np.diff([s.at for s in server.requests[1:]])
    assert len(gaps) == 3 and gaps.min() >= 0.15  # 1/5 s apart, less a generous margin for scheduling


def test_fingerprint_names_api_endpoint_and_model_never_the_key(encoder):
    with serving("openai", encoder) as server:
        a = make("openai", server.url, dimension=384, api_key="sk-one")
        b = make("openai", server.url + "/v1/", dimension=384, api_key="sk-two")
        c = make("openai", server.url, dimension=384, model="other-model")
        d = TEIEncoder(server.url, dimension=384)
        assert a.fingerprint == b.fingerprint and len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
        assert "sk-one" not in a.label + repr(a) + a.fingerprint
        assert server.requests == []  # a configured dimension needs no call


def test_bad_urls_and_missing_models_are_named():
    with pytest.raises(EncoderError, match="is not an http:// or https:// URL"):
        TEIEncoder("ftp://example.com")
    with pytest.raises(EncoderError, match="no model given"):
        OpenAIEncoder("http://127.0.0.1:1")


# -- configuration and Airflow connections ---------------------------------------------------------
def config_with(encoder_cfg: dict, tmp_path) -> EmbwardenConfig:
    data = {"deployments": {"search": {"source": {"kind": "parquet", "path": "prod.parquet"},
                                       "versions": {"v1": {"encoder": encoder_cfg}}, "active_version": "v1"}}}
    path = tmp_path / "embwarden.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def test_a_connection_gives_url_key_model_and_headers(encoder, tmp_path, monkeypatch):
    with serving("openai", encoder, token="sk-from-airflow") as server:
        monkeypatch.setenv("AIRFLOW_CONN_EMB_API", server.connection(
            "sk-from-airflow", model="minilm-l6", headers={"OpenAI-Organization": "org-1"}))
        config = config_with({"kind": "openai", "connection": "emb_api", "batch_size": 3, "max_retries": 1}, tmp_path)
        pipeline = build_pipeline(config, "search", "v1")
        np.testing.assert_allclose(pipeline.embed(TEXTS, np.random.default_rng(0)), encoder.encode(TEXTS), atol=1e-6)
        assert pipeline.encoder.label.endswith("(connection 'emb_api')")
        seen = server.requests[0]
        assert seen.headers["Authorization"] == "Bearer sk-from-airflow"
        assert seen.headers["OpenAI-Organization"] == "org-1"
        assert seen.body["model"] == "minilm-l6" and server.batches() == [3, 2]

        monkeypatch.setenv("AIRFLOW_CONN_EMB_API", server.connection("sk-revoked", model="minilm-l6"))
        with pytest.raises(EncoderError, match=r"openai encoder http://127.0.0.1:\d+/v1/embeddings "
                                               r"\(connection 'emb_api'\): credentials rejected .*check the password "
                                               r"\(API key\) of Airflow connection 'emb_api'"):
            build_pipeline(config, "search", "v1").encoder.encode(TEXTS)


def test_an_undefined_connection_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    config = config_with({"kind": "tei", "connection": "nowhere"}, tmp_path)
    with pytest.raises(ConfigError, match=r"deployments.search.versions.v1.encoder.connection: Airflow connection "
                                          r"'nowhere' is not defined \(set AIRFLOW_CONN_NOWHERE"):
        build_pipeline(config, "search", "v1")


def test_a_url_encoder_is_built_from_the_configuration(encoder, tmp_path):
    with serving("tei", encoder) as server:
        config = config_with({"kind": "tei", "url": server.url, "model": "minilm@v1", "dimension": 384,
                              "requests_per_second": 50}, tmp_path)
        remote = build_pipeline(config, "search", "v1").encoder
        assert isinstance(remote, TEIEncoder) and remote.batch_size == 32 and remote.dimension == 384
        np.testing.assert_allclose(remote.encode(TEXTS[:2]), encoder.encode(TEXTS[:2]), atol=1e-6)
        assert "Authorization" not in server.requests[0].headers


@pytest.mark.parametrize(("encoder_cfg", "message"), [
    ({"kind": "openai", "model": "m"}, r"versions.v1.encoder: give exactly one of 'url' .* or 'connection'"),
    ({"kind": "openai", "url": "http://h", "connection": "c", "model": "m"}, r"give exactly one of 'url'"),
    ({"kind": "openai", "url": "http://h"}, r"versions.v1.encoder: model: required with 'url'"),
    ({"kind": "tei", "url": "https://user:pw@h"}, r"url: holds credentials"),
    ({"kind": "tei", "url": "h:8080"}, r"url: expected an http:// or https:// URL, found 'h:8080'"),
    ({"kind": "tei", "url": "http://h", "batch_size": 0}, r"versions.v1.encoder.batch_size: Input should be greater"),
    ({"kind": "tei", "url": "http://h", "requests_per_second": 0}, r"encoder.requests_per_second: Input should be"),
    ({"kind": "openai", "url": "http://h", "model": "m", "dimension": 3, "dimensions": 4}, r"dimension 3 and dim"),
    ({"kind": "cohere"}, r"versions.v1.encoder: .*'local', 'openai', 'tei'"),
    ({"kind": "tei", "url": "http://h", "api_key": "sk"}, r"encoder.api_key: Extra inputs are not permitted"),
])
def test_bad_encoder_configurations_are_named(tmp_path, encoder_cfg, message):
    with pytest.raises(ConfigError, match=message):
        config_with(encoder_cfg, tmp_path)


def test_an_encoder_without_kind_is_local(tmp_path):
    config = config_with({"batch_size": 8}, tmp_path)
    assert config.deployment("search").versions["v1"].encoder.kind == "local"


# -- a whole audit through an HTTP encoder ---------------------------------------------------------
AUX = corpora.synthetic(150, seed=1)
TARGETS = corpora.synthetic(20, seed=2)
BOW = {"epochs": 3, "bootstrap_resamples": 100}


def test_an_audit_through_the_api_scores_what_the_local_model_scores(encoder, tmp_path):
    local = Pipeline(encoder, Identity())
    expected = Auditor(local, AUX).run(
        "bow_inversion", BOW, {"sample": embed_corpus(local, TARGETS, np.random.default_rng(0), "v", "t")})
    with serving("openai", encoder) as server, make("openai", server.url, batch_size=64) as remote:
        pipeline = Pipeline(remote, Identity())
        targets = {"sample": embed_corpus(pipeline, TARGETS, np.random.default_rng(0), "v", "t")}
        result = Auditor(pipeline, AUX, cache_dir=tmp_path).run("bow_inversion", BOW, targets)
    assert result.error is None and result.scores
    assert [(s.metric, round(s.value, 4)) for s in result.scores] == \
        [(s.metric, round(s.value, 4)) for s in expected.scores]
    batches = server.batches()
    assert batches[:4] == [20, 64, 64, 22]  # targets, then the auxiliary corpus
    assert batches[4:] and all(b <= 64 for b in batches[4:])  # then bow's candidate words, once each


def test_an_api_failing_mid_audit_gives_an_error_not_partial_scores(encoder, tmp_path):
    with serving("openai", encoder) as server, make("openai", server.url, batch_size=64, max_retries=1) as remote:
        pipeline = Pipeline(remote, Identity())
        targets = {"sample": embed_corpus(pipeline, TARGETS, np.random.default_rng(0), "v", "t")}
        server.fail = [None, 500, 500]  # the auxiliary corpus's second batch never comes back
        result = Auditor(pipeline, AUX, cache_dir=tmp_path).run("bow_inversion", BOW, targets)
    assert result.scores == () and result.error.startswith("EncoderUnavailable: openai encoder http://127.0.0.1:")
    assert "gave up after 2 attempts; the last: HTTP 500" in result.error
    assert not list(tmp_path.rglob("*.npy")) and not list(tmp_path.rglob("*.pkl"))  # nothing half-done is cached
