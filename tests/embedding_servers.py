"""Real HTTP embedding APIs on loopback that serve the bundled model, for tests of the HTTP encoders.

`EmbeddingServer("openai", encoder)` answers POST /v1/embeddings with OpenAI's request and response
shape; `EmbeddingServer("tei", encoder)` answers POST /embed the way text-embeddings-inference does.
Knobs (plain attributes, changeable while it runs) make it misbehave the ways real APIs do: require a
bearer token, fail the next calls with given statuses, answer slowly, answer another dimension,
refuse batches over a size, or leave vectors out. Every request is recorded (time, path, headers,
inputs) in `.requests`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

PATHS = {"openai": "/v1/embeddings", "tei": "/embed"}


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    at: float                 # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    body: object


class EmbeddingServer:
    def __init__(self, api: str, encoder, *, token: str | None = None) -> None:
        assert api in PATHS, api
        self.api = api
        self.encoder = encoder
        self.token = token                       # require `Authorization: Bearer <token>`
        self.fail: list[int | None] = []         # statuses for the next calls, one per call (None: answer)
        self.retry_after: str | None = "0"       # Retry-After sent with a 429 or 503
        self.delay = 0.0                         # seconds to wait before answering ...
        self.delay_calls = 0                     # ... the next this many calls
        self.dimension: int | None = None        # answer only the first `dimension` coordinates
        self.max_batch: int | None = None        # refuse larger batches (TEI's max_client_batch_size)
        self.reverse = False                     # OpenAI: list `data` in reverse (order is by `index`)
        self.drop = 0                            # leave out the last `drop` vectors of each answer
        self.requests: list[Seen] = []
        self._lock = threading.Lock()            # one model, many handler threads
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                server.requests.append(Seen(time.monotonic(), self.path, dict(self.headers), body))
                status, payload, headers = server.answer(self.path, self.headers.get("Authorization"), body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- what the API answers --------------------------------------------------------------------
    def answer(self, path: str, authorization: str | None, body: object) -> tuple[int, object, dict[str, str]]:
        with self._lock:
            fail = self.fail.pop(0) if self.fail else None
            delay = self.delay if self.delay_calls > 0 else 0.0
            self.delay_calls = max(0, self.delay_calls - 1)
        if delay:
            time.sleep(delay)
        if path != PATHS[self.api]:
            return 404, self._error(f"no route {path}", "not_found"), {}
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, self._error("Incorrect API key provided", "invalid_api_key"), {}
        if fail is not None:
            retry = {"Retry-After": self.retry_after} if fail in (429, 503) and self.retry_after is not None else {}
            return fail, self._error(f"simulated HTTP {fail}", "simulated"), retry
        texts = self._texts(body)
        if isinstance(texts, str):
            return (422 if self.api == "tei" else 400), self._error(texts, "invalid_request_error"), {}
        if self.max_batch is not None and len(texts) > self.max_batch:
            msg = f"batch size {len(texts)} > maximum allowed batch size {self.max_batch}"
            return 413, self._error(msg, "Validation"), {}
        with self._lock:
            vectors = self.encoder.encode(texts)
        if self.api == "openai" and body.get("dimensions"):
            vectors = vectors[:, : body["dimensions"]]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        if self.dimension is not None:
            vectors = vectors[:, : self.dimension]
        vectors = vectors[: len(vectors) - self.drop]
        if self.api == "tei":
            return 200, [v.tolist() for v in vectors], {}
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        tokens = sum(len(t.split()) for t in texts)
        return 200, {"object": "list", "data": data[::-1] if self.reverse else data, "model": body["model"],
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, {}

    def _texts(self, body: object) -> list[str] | str:
        """The request's texts, or what is wrong with the request."""
        key = "inputs" if self.api == "tei" else "input"
        if not isinstance(body, dict) or key not in body:
            return f"the body must be a JSON object with {key!r}"
        if self.api == "openai" and not isinstance(body.get("model"), str):
            return "you must provide a model parameter"
        texts = [body[key]] if isinstance(body[key], str) else body[key]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return f"{key!r} must be a string or a non-empty list of strings"
        return texts

    def _error(self, message: str, kind: str) -> object:
        if self.api == "tei":
            return {"error": message, "error_type": kind}
        return {"error": {"message": message, "type": kind, "param": None, "code": kind}}

    # -- what tests look at ----------------------------------------------------------------------
    def batches(self) -> list[int]:
        """Input count of each answered embedding request, in arrival order."""
        key = "inputs" if self.api == "tei" else "input"
        return [len(r.body[key]) for r in self.requests if isinstance(r.body, dict) and key in r.body]

    def connection(self, token: str | None = None, **extra) -> str:
        """An Airflow connection (JSON for `AIRFLOW_CONN_<ID>`) reaching this server with `token`."""
        conn = {"conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http"}
        if token is not None:
            conn["password"] = token
        if extra:
            conn["extra"] = extra
        return json.dumps(conn)

    def start(self) -> EmbeddingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serving(api: str, encoder, **knobs) -> Iterator[EmbeddingServer]:
    server = EmbeddingServer(api, encoder, token=knobs.pop("token", None))
    for name, value in knobs.items():
        assert hasattr(server, name), name
        setattr(server, name, value)
    server.start()
    try:
        yield server
    finally:
        server.stop()
