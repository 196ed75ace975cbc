"""The MLflow Model Registry client against a real `mlflow server` (tests/mlflow_server.py): aliases,
version tags, MLflow's refusals, an unreachable server, and the client built from an Airflow connection."""

from __future__ import annotations

import base64
import json
import uuid
from types import SimpleNamespace

import pytest

from monitors.targets import TargetUnavailable
from monitors.targets.mlflow_registry import MlflowError, MlflowRegistry, MlflowUnavailable
from tests.mlflow_server import mlflow_server, register_model  # noqa: F401  (a real MLflow server)
from tests.receivers import free_port


def a_model(url: str, n_versions: int = 3) -> tuple[str, list[str]]:
    name = f"support-search-{uuid.uuid4().hex[:8]}"
    return name, register_model(url, name, n_versions)


def conn(host="127.0.0.1", port=None, schema="", login=None, password=None, **extra) -> SimpleNamespace:
    """What the client reads of an Airflow Connection."""
    return SimpleNamespace(conn_id="embwarden_mlflow", host=host, port=port, schema=schema, login=login,
                           password=password, extra_dejson=extra)


def test_the_alias_moves_between_versions(mlflow_server):  # noqa: F811
    model, versions = a_model(mlflow_server.url)
    assert versions == ["1", "2", "3"]
    registry = MlflowRegistry(mlflow_server.url)
    registry.set_alias(model, "champion", "2")
    assert registry.alias_version(model, "champion") == "2"
    registry.set_alias(model, "champion", 1)                       # a rollback; an int is sent as "1"
    assert registry.alias_version(model, "champion") == "1"
    registry.set_alias(model, "champion", "1")                     # idempotent
    assert registry.alias_version(model, "champion") == "1"


def test_a_missing_alias_is_none_but_a_missing_model_is_an_error(mlflow_server):  # noqa: F811
    model, _ = a_model(mlflow_server.url, 1)
    registry = MlflowRegistry(mlflow_server.url)
    assert registry.alias_version(model, "champion") is None
    with pytest.raises(MlflowError, match="RESOURCE_DOES_NOT_EXIST") as err:
        registry.alias_version("no-such-model", "champion")
    assert "no-such-model" in str(err.value) and err.value.status_code == 404


def test_version_tags_are_set_overwritten_and_kept_per_version(mlflow_server):  # noqa: F811
    model, _ = a_model(mlflow_server.url, 2)
    registry = MlflowRegistry(mlflow_server.url)
    assert registry.version_tags(model, "2") == {}
    registry.set_version_tag(model, "2", "embwarden.gate", "closed")
    registry.set_version_tag(model, 2, "embwarden.audit_run", "42")
    assert registry.version_tags(model, "2") == {"embwarden.gate": "closed", "embwarden.audit_run": "42"}
    registry.set_version_tag(model, "2", "embwarden.gate", "open")      # the gate reopens
    assert registry.version_tags(model, 2)["embwarden.gate"] == "open"
    assert registry.version_tags(model, "1") == {}


def test_refusals_name_the_call_what_it_was_about_and_mlflows_error(mlflow_server):  # noqa: F811
    model, _ = a_model(mlflow_server.url, 2)
    registry = MlflowRegistry(mlflow_server.url)
    with pytest.raises(MlflowError) as err:
        registry.set_alias("no-such-model", "champion", "1")
    assert "set_alias" in str(err.value) and "'no-such-model'" in str(err.value) and "'champion'" in str(err.value)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST" and "not found" in str(err.value)
    with pytest.raises(MlflowError, match=r"set_alias\(.*version='9'.*RESOURCE_DOES_NOT_EXIST"):
        registry.set_alias(model, "champion", "9")
    with pytest.raises(MlflowError, match="INVALID_PARAMETER_VALUE.*reserved"):
        registry.set_alias(model, "latest", "1")
    with pytest.raises(MlflowError, match=r"set_version_tag\(.*'no-such-model'.*RESOURCE_DOES_NOT_EXIST"):
        registry.set_version_tag("no-such-model", "1", "embwarden.gate", "closed")
    with pytest.raises(MlflowError, match=r"version_tags\(.*version='7'.*RESOURCE_DOES_NOT_EXIST"):
        registry.version_tags(model, "7")
    with pytest.raises(MlflowError, match="HTTP 400 INVALID_PARAMETER_VALUE"):
        registry.alias_version(model, "bad alias")         # not a missing alias: a name MLflow refuses


def test_an_unreachable_server_is_unavailable_and_no_credential_is_quoted():
    port = free_port()
    registry = MlflowRegistry(f"http://admin:hunter2-secret@127.0.0.1:{port}", timeout=2)
    with pytest.raises(MlflowUnavailable) as err:
        registry.set_alias("support-search", "champion", "2")
    assert f"127.0.0.1:{port}" in str(err.value) and "support-search" in str(err.value)
    assert "hunter2" not in str(err.value) and "admin" not in str(err.value)
    with pytest.raises(MlflowUnavailable):
        MlflowRegistry.from_connection(conn(port=port, token="tok-secret-123")).alias_version("m", "champion")


def test_a_5xx_is_unavailable_and_a_non_json_refusal_is_quoted(webhook_receiver):
    webhook_receiver.status = 503
    registry = MlflowRegistry(webhook_receiver.url, token="tok-secret-123")
    with pytest.raises(MlflowUnavailable, match=r"set_alias\(model='m', version='2', alias='champion'\): HTTP 503"):
        registry.set_alias("m", "champion", "2")
    webhook_receiver.status = 403
    with pytest.raises(MlflowError, match="HTTP 403") as err:
        registry.set_version_tag("m", "2", "embwarden.gate", "closed")
    assert "tok-secret-123" not in str(err.value)


def test_from_connection_builds_the_url_and_the_credentials(mlflow_server, webhook_receiver):  # noqa: F811
    c = json.loads(mlflow_server.connection())
    assert c == {"conn_type": "http", "host": "127.0.0.1", "port": mlflow_server.port, "schema": "http"}
    registry = MlflowRegistry.from_connection(conn(c["host"], c["port"], c["schema"]))
    assert registry.base_url == mlflow_server.url
    model, _ = a_model(mlflow_server.url, 1)
    registry.set_alias(model, "champion", "1")
    assert registry.alias_version(model, "champion") == "1"

    assert MlflowRegistry.from_connection(conn("mlflow.internal", 5000)).base_url == "http://mlflow.internal:5000"
    assert MlflowRegistry.from_connection(conn("mlflow.internal", 443, "https")).base_url == \
        "https://mlflow.internal:443"
    assert MlflowRegistry.from_connection(conn("https://ml.example.com/mlflow/")).base_url == \
        "https://ml.example.com/mlflow"
    assert MlflowRegistry.from_connection(conn("https://ml.example.com/mlflow", 8443)).base_url == \
        "https://ml.example.com:8443/mlflow"
    assert MlflowRegistry.from_connection(conn("http://ml.example.com:5000", 9999)).base_url == \
        "http://ml.example.com:5000"
    assert MlflowRegistry.from_connection(conn(timeout=2.5)).timeout == 2.5
    with pytest.raises(TargetUnavailable, match="no host"):
        MlflowRegistry.from_connection(conn(host=""))

    # login/password: basic auth; the extra's token: a bearer token, which wins over a login
    port = webhook_receiver.port
    MlflowRegistry.from_connection(conn(port=port, login="embwarden", password="pw-secret")).set_alias("m", "a", "1")
    MlflowRegistry.from_connection(conn(port=port, login="embwarden", password="pw-secret",
                                        token="tok-secret")).set_alias("m", "a", "2")
    (path, headers, body), (_, headers2, body2) = webhook_receiver.requests
    assert path == "/api/2.0/mlflow/registered-models/alias"
    assert body == {"name": "m", "alias": "a", "version": "1"} and body2["version"] == "2"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"embwarden:pw-secret").decode()
    assert headers2["Authorization"] == "Bearer tok-secret"
