"""The embedding service under a real uvicorn server, against a real PostgreSQL ledger."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from monitors.service import gate_client
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


def test_gate_client_needs_only_the_standard_library(tmp_path: Path) -> None:
    """Loaded by path in a Python without site-packages (-S) or the repository on its path (-I), as a
    service that copied the file would: no third-party or embwarden import, and it still fails closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        code = (
            "import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('gate_client', {gate_client.__file__!r})\n"
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
            f"with module.GateClient('http://127.0.0.1:{port}/v1/gates/{DEP}', timeout=0.5) as gate:\n"
            "    print(gate.is_open()); print(gate.reason)\n"
            "print(sorted(m for m in ('httpx', 'monitors', 'audits', 'fastapi') if m in sys.modules))\n")
        done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    is_open, reason, imported = done.stdout.splitlines()
    assert is_open == "False" and "unreachable" in reason and "ConnectionRefusedError" in reason, done.stdout
    assert imported == "[]"


TOKEN = "gate-reader-" + "5f0c9e7a1d2b4c6e"
GATE = {"deployment": DEP, "state": "open", "reason": "v1 passed its audit", "active_version": "v1",
        "since": "2025-01-01T00:00:00+00:00", "actor": "admin"}


@pytest.fixture
def gate_server() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A stand-in for the Airflow plugin's `GET api/gates/{deployment}`: the gate for the Bearer token
    only, 401 otherwise (echoing the credential, as a careless server might); a few broken answers on
    other paths. Yields its base URL and the requests it received (path, Authorization header)."""
    hits: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization")
            hits.append((self.path, auth))
            if self.path == "/slow":
                time.sleep(1.0)
            if self.path == "/redirect":
                return self._send(302, b"", "text/plain", Location="/gate")
            if self.path == "/not-json":
                return self._send(200, b"<html>login</html>", "text/html")
            if self.path == "/bad-state":
                return self._send(200, json.dumps({**GATE, "state": "maybe"}).encode())
            if auth != f"Bearer {TOKEN}":
                return self._send(401, json.dumps({"detail": f"Not authenticated (got {auth})"}).encode())
            return self._send(200, json.dumps(GATE).encode())

        def _send(self, code: int, body: bytes, kind: str = "application/json", **headers: str) -> None:
            self.send_response(code)
            for name, value in {"Content-Type": kind, "Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_gate_client_sends_the_read_only_token(gate_server, monkeypatch) -> None:
    base, hits = gate_server
    monkeypatch.delenv(gate_client.TOKEN_ENV, raising=False)
    with GateClient(f"{base}/gate", token=TOKEN) as gate:
        assert gate.is_open() and gate.reason == "v1 passed its audit" and gate.active_version == "v1"
        assert gate.state() == GATE
    assert hits == [("/gate", f"Bearer {TOKEN}")]
    assert TOKEN not in repr(gate)

    for token in ("not-" + TOKEN, None):
        gate = GateClient(f"{base}/gate", token=token)
        assert not gate.is_open() and gate.active_version is None
        assert gate.reason.startswith("gate service answered 401: Not authenticated"), gate.reason
        assert token is None or token not in gate.reason      # echoed by the server, scrubbed by the client
    assert hits[-1] == ("/gate", None)

    # Without `token`, EMBWARDEN_GATE_TOKEN is read.
    monkeypatch.setenv(gate_client.TOKEN_ENV, TOKEN)
    assert GateClient(f"{base}/gate").is_open() and hits[-1] == ("/gate", f"Bearer {TOKEN}")


def test_gate_client_fails_closed_on_answers_that_are_not_a_gate(gate_server) -> None:
    base, hits = gate_server
    for path, expected in [("/not-json", "answered 200 with a body that is not JSON"),
                           ("/bad-state", "answered 200 with no gate state"),
                           ("/redirect", "answered 302: a redirect to /gate, not followed"),
                           ("/slow", "unreachable: no answer within 0.3 s")]:
        gate = GateClient(base + path, token=TOKEN, timeout=0.3)
        assert not gate.is_open() and gate.state()["state"] == "closed", path
        assert expected in gate.reason and TOKEN not in gate.reason, (path, gate.reason)
    assert "/gate" not in [path for path, _ in hits]                  # the redirect was not followed
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/gate", "http:///no-host", "127.0.0.1:8000/v1/gates/x"):
        with pytest.raises(ValueError, match="only http:// and https://") as raised:
            GateClient(url)
        assert url in str(raised.value)


def test_gate_client_caches_answers_and_failures(gate_server) -> None:
    base, hits = gate_server
    gate = GateClient(f"{base}/gate", token=TOKEN, cache_seconds=0.5)
    assert gate.is_open() and gate.is_open() and gate.reason and gate.active_version == "v1"
    assert len(hits) == 1
    time.sleep(0.5)
    assert gate.is_open() and len(hits) == 2

    # A failure is cached too, and callers in many threads at once cause one request.
    hits.clear()
    broken = GateClient(f"{base}/bad-state", cache_seconds=60)
    answers: list[bool] = []
    threads = [threading.Thread(target=lambda: answers.append(broken.is_open())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [False] * 16 and len(hits) == 1


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
