"""The embedding service under a real uvicorn server, against a real PostgreSQL ledger."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from benchmarks.service import gate_under_load
from monitors.config import load_config
from monitors.ledger.database import session_scope
from monitors.ledger.models import Deployment, GateEvent, Version
from monitors.ledger.registry import get_deployment, sync
from monitors.service.app import create_app
from monitors.service.gate_client import GateClient
from tests.helpers import running, write_config
from tests.schema_fuzz import no_server_errors

DEP = "support-search"
TTL = 0.2
DOWN_URL = "postgresql://postgres@127.0.0.1:1/x"


def poll(request: Callable[[], httpx.Response], accept: Callable[[httpx.Response], bool],
         seconds: float = 5.0) -> httpx.Response:
    """The first answer `accept` takes, within `seconds`: the service rereads the ledger every TTL."""
    deadline = time.monotonic() + seconds
    while not accept(answer := request()):
        assert time.monotonic() < deadline, f"the service did not pick up the ledger's change: {answer.text}"
        time.sleep(0.05)
    return answer


def add_gate_event(url: str, state: str, reason: str) -> None:
    with session_scope(url) as session:
        session.add(GateEvent(deployment_id=get_deployment(session, DEP).id, state=state, reason=reason,
                              actor="test"))


@pytest.fixture
def config_file(tmp_path: Path, ledger: str) -> Path:
    path = write_config(tmp_path / "embwarden.yaml", ledger)
    with session_scope(ledger) as session:
        sync(session, load_config(path))
    return path


def embed(client: httpx.Client, texts: str | list[str]) -> httpx.Response:
    return client.post("/v1/embeddings", json={"input": texts, "model": DEP})


def test_embeddings_follow_the_gate_and_the_active_version(config_file: Path, ledger: str, encoder) -> None:
    text = "my card was charged twice, please refund order 4417"
    with running(create_app(DEP, str(config_file), cache_seconds=TTL)) as base, httpx.Client(base_url=base) as client:
        assert client.get("/healthz").json() == {"status": "ok"}

        # Open, v1 active: 384-dim vectors with fresh Gaussian noise on every call.
        first, second = embed(client, [text, "where is my parcel"]), embed(client, text)
        assert first.status_code == 200 and first.headers["X-Embwarden-Version"] == "v1"
        body = first.json()
        assert body["object"] == "list" and body["model"] == f"{DEP}/v1" and body["usage"]["inputs"] == 2
        assert [d["index"] for d in body["data"]] == [0, 1]
        a, b = np.array(body["data"][0]["embedding"]), np.array(second.json()["data"][0]["embedding"])
        assert a.shape == b.shape == (384,)
        assert 0.2 < np.std(a - b) < 0.4  # two independent draws of sigma 0.2: sigma * sqrt(2)

        gate = client.get(f"/v1/gates/{DEP}").json()
        assert gate["state"] == "open" and gate["active_version"] == "v1" and gate["since"]
        gate_client = GateClient(f"{base}/v1/gates/{DEP}", cache_seconds=TTL)
        assert gate_client.is_open()

        # Closed in the ledger: refused within the cache time, with the reason.
        add_gate_event(ledger, "closed", "bow_inversion.token_f1 0.61 >= gate 0.5")
        refused = poll(lambda: embed(client, text), lambda r: r.status_code == 503)
        assert refused.json()["detail"] == {"error": "gate closed", "deployment": DEP,
                                            "reason": "bow_inversion.token_f1 0.61 >= gate 0.5",
                                            "active_version": "v1"}
        assert int(refused.headers["Retry-After"]) > 0
        gate = client.get(f"/v1/gates/{DEP}").json()
        assert gate["state"] == "closed" and gate["reason"] == "bow_inversion.token_f1 0.61 >= gate 0.5"
        time.sleep(TTL)
        assert not gate_client.is_open() and gate_client.reason == "bow_inversion.token_f1 0.61 >= gate 0.5"

        # v2 activated and the gate reopened: served by v2, which adds no noise.
        with session_scope(ledger) as session:
            dep = get_deployment(session, DEP)
            v2 = session.scalar(sa.select(Version.id).where(Version.deployment_id == dep.id, Version.name == "v2"))
            session.execute(sa.update(Deployment).where(Deployment.id == dep.id).values(active_version_id=v2))
        add_gate_event(ledger, "open", "v2 passed its audit")
        served = poll(lambda: embed(client, text),
                      lambda r: r.status_code == 200 and r.headers["X-Embwarden-Version"] == "v2")
        assert served.json()["model"] == f"{DEP}/v2"
        np.testing.assert_allclose(served.json()["data"][0]["embedding"], encoder.encode([text])[0], atol=1e-5)
        b64 = client.post("/v1/embeddings", json={"input": text, "encoding_format": "base64"}).json()
        decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, encoder.encode([text])[0], atol=1e-5)

        # Bad input: 422 naming the field and index, without echoing the texts.
        for payload, message in [
            ({"input": []}, "input: the list is empty"),
            ({"input": ["fine", 3]}, "input[1]: expected a string, found number"),
            ({"input": {"text": "x"}}, "input: expected a string or a list of strings, found object"),
            ({"input": ["x"] * 2049}, "input: 2049 strings, at most 2048"),
            ({"input": ["ok", "y" * 40_000]}, "input[1]: 40000 characters, at most 32768"),
            ({"model": DEP}, "Field required"),
            ({"input": ["ok", ""]}, "input[1]: the string is empty"),       # as OpenAI refuses it
            ({"input": "caf\ud800"}, "input[0]: a lone surrogate (\\ud800) at character 3"),  # a 500 before
        ]:
            answer = client.post("/v1/embeddings", content=json.dumps(payload),   # \uXXXX escapes, as JSON allows
                                 headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, payload
            [error] = answer.json()["detail"]
            assert error["loc"] == ["body", "input"] and error["msg"].startswith(message), error
            assert "input" not in error
        assert client.get("/v1/gates/another-deployment").status_code == 404


def test_a_down_ledger_fails_closed(tmp_path: Path) -> None:
    path = write_config(tmp_path / "embwarden.yaml", DOWN_URL)
    with running(create_app(DEP, str(path), cache_seconds=TTL, db_url=DOWN_URL)) as base, \
            httpx.Client(base_url=base) as client:
        assert client.get("/healthz").status_code == 200
        for answer in (embed(client, "hello"), client.get(f"/v1/gates/{DEP}")):
            assert answer.status_code == 503
            detail = answer.json()["detail"]
            assert detail["error"] == "ledger unavailable" and "127.0.0.1:1/x unreadable" in detail["reason"]
        gate = GateClient(f"{base}/v1/gates/{DEP}")
        assert not gate.is_open() and gate.reason.startswith("gate service answered 503: ledger")


def test_gate_client_fails_closed_when_the_service_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        gate = GateClient(f"http://127.0.0.1:{port}/v1/gates/{DEP}", timeout=0.5)
        assert not gate.is_open()
        assert gate.state()["state"] == "closed" and "unreachable" in gate.reason


def test_no_answer_leaves_after_the_gate_closes_under_load(config_file: Path, ledger: str) -> None:
    """16 clients keep the encoder's queue longer than the gate's staleness; the gate closes, reopens
    and closes again. Before the fix requests admitted while open were answered seconds after the
    close; now every 200 leaves within the staleness (TTL) of a close, plus scheduling slack."""
    ttl = 0.3
    with running(create_app(DEP, str(config_file), cache_seconds=ttl)) as base:
        result = gate_under_load(base, lambda state: add_gate_event(ledger, state, f"load test: {state}"),
                                 clients=16, texts_per_request=32, phases=(2.0, 2.0, 1.5, 2.0))
    assert result.other == [] and result.served > 10 and result.refused > 10, result
    assert result.leak_seconds <= ttl + 0.5, result


def test_the_service_answers_any_request_without_a_server_error(config_file: Path, ledger: str) -> None:
    """Schemathesis over the service's own OpenAPI document: valid and invalid requests, bounded.
    503 is the service's documented answer for a closed gate or an unreadable ledger."""
    with running(create_app(DEP, str(config_file), cache_seconds=TTL)) as base:
        document = httpx.get(f"{base}/openapi.json").json()
        seen = no_server_errors(document, base, examples=40, allowed=(503,))
    assert seen["POST /v1/embeddings"][200] > 0 and seen["POST /v1/embeddings"][422] > 0, seen
