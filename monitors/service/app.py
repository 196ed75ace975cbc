"""A reference embedding service that honours its deployment's gate.

It embeds with the version the ledger says is active, through that version's pipeline (encoder
and privacy transform), so a rollback or an activation takes effect without a redeploy; and it
refuses (503) while the gate is closed or the ledger cannot be read, so an audit that closes the
gate stops embeddings. The ledger is read at most once per `cache_seconds`, not per request; the
gate is asked before a request is embedded and again before its answer leaves, so no answer leaves
more than `cache_seconds` after a close, however long the request queued for the encoder.
Request texts and vectors are never logged: only counts.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import numpy as np
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, WithJsonSchema, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from audits.corpora import unencodable
from audits.errors import EmbwardenError
from audits.pipeline import Pipeline
from monitors.config import EmbwardenConfig, load_config
from monitors.deployments import build_pipeline
from monitors.gates import GateStatus, status_of
from monitors.ledger.database import LedgerUnavailable, ledger_url, safe_url
from monitors.ledger.registry import get_deployment

log = logging.getLogger(__name__)

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 32_768
RETRY_AFTER_CLOSED_S = 60  # a closed gate waits for an audit or a person, not for seconds
CONNECT_TIMEOUT_S = 3  # an unreachable ledger must fail a request quickly, not hang it
VERSION_HEADER = "X-Embwarden-Version"
_JSON_TYPES = {"str": "string", "int": "number", "float": "number", "bool": "boolean", "NoneType": "null",
               "dict": "object", "list": "array"}


class GateCache:
    """Reads the gate at most once per `ttl` seconds (monotonic clock); a failed read is cached too,
    so a down ledger is not hammered, and raised as LedgerUnavailable so that callers fail closed."""

    def __init__(self, url: str, deployment: str, ttl: float) -> None:
        self.url, self.deployment, self.ttl = url, deployment, ttl
        backend = make_url(url)
        pg = backend.get_backend_name() == "postgresql" and backend.get_driver_name() in ("psycopg2", "psycopg")
        self.engine = sa.create_engine(url, pool_pre_ping=True,
                                       connect_args={"connect_timeout": CONNECT_TIMEOUT_S} if pg else {})
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._last: GateStatus | str | None = None

    def current(self) -> GateStatus:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                # Stamped before the read: an answer is never older than `ttl`, however slow the ledger.
                started = time.monotonic()
                self._note(self._read())
                self._read_at = started
            last = self._last
        if last is None or isinstance(last, str):
            raise LedgerUnavailable(last or "the gate has not been read")
        return last

    def _read(self) -> GateStatus | str:
        try:
            with Session(self.engine) as session:
                dep = get_deployment(session, self.deployment)
                if dep.active_version is None:
                    return f"deployment {self.deployment!r} has no active version in the ledger"
                return status_of(session, dep)
        except EmbwardenError as exc:  # the deployment is not in the ledger
            return str(exc)
        except sa.exc.SQLAlchemyError as exc:
            cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            return f"ledger {safe_url(self.url)} unreadable: {cause[0] if cause else type(exc).__name__}"

    def _note(self, new: GateStatus | str) -> None:
        """Log changes only: a state that holds is not news on every refresh."""
        old = self._last
        if isinstance(new, str) and new != old:
            log.error("%s: failing closed: %s", self.deployment, new)
        elif isinstance(new, GateStatus) and (not isinstance(old, GateStatus) or (old.state, old.active_version)
                                        != (new.state, new.active_version)):
            log.log(logging.INFO if new.is_open else logging.WARNING, "%s: gate %s, active version %s (%s)",
                    self.deployment, new.state, new.active_version, new.reason)
        self._last = new


class Pipelines:
    """One pipeline per version, its model loaded once. Encoding is serialised per version because a
    Hugging Face fast tokenizer raises when called from several threads at once."""

    def __init__(self, config: EmbwardenConfig, deployment: str) -> None:
        self.config, self.deployment = config, deployment
        self._built: dict[str, tuple[Pipeline, threading.Lock]] = {}
        self._lock = threading.Lock()

    def get(self, version: str | None) -> tuple[Pipeline, threading.Lock]:
        if version is None:
            raise EmbwardenError(f"deployment {self.deployment!r} has no active version in the ledger")
        with self._lock:
            if version not in self._built:
                started = time.perf_counter()
                pipeline = build_pipeline(self.config, self.deployment, version)
                pipeline.encoder.encode(["warm-up"])  # load the model now, under the lock, once
                self._built[version] = (pipeline, threading.Lock())
                log.info("%s/%s: pipeline loaded in %.1f s", self.deployment, version, time.perf_counter() - started)
            return self._built[version]

    def embed(self, version: str | None, texts: list[str]) -> np.ndarray:
        pipeline, lock = self.get(version)
        with lock:
            return pipeline.embed(texts, np.random.default_rng())  # fresh entropy: noise is never repeated


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings request. `model` is accepted and ignored: the ledger decides the version."""

    # Checked by `_texts` (messages naming the index); the schema documents what is accepted.
    input: Annotated[Any, WithJsonSchema({"anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS},
        {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS,
         "items": {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS}}]})]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _texts(cls, value: Any) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list):
            raise ValueError(f"input: expected a string or a list of strings, found {_json_type(value)}")
        if not texts:
            raise ValueError("input: the list is empty; give at least one string")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"input: {len(texts)} strings, at most {MAX_INPUTS} per request")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"input[{i}]: expected a string, found {_json_type(text)}")
            if len(text) > MAX_INPUT_CHARS:
                raise ValueError(f"input[{i}]: {len(text)} characters, at most {MAX_INPUT_CHARS}")
            if not text:
                raise ValueError(f"input[{i}]: the string is empty; give a non-empty string")
            if (bad := unencodable(text)) is not None:
                raise ValueError(f"input[{i}]: a lone surrogate (\\u{ord(text[bad]):04x}) at character {bad} "
                                 "is not Unicode text")
        return texts


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value).__name__, type(value).__name__)


def _vector(vec: np.ndarray, encoding_format: str) -> list[float] | str:
    # base64 is what the openai client asks for by default: little-endian float32 bytes.
    if encoding_format == "base64":
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return vec.tolist()


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without the `input` echo: it would send (part of) the texts back."""
    assert isinstance(exc, RequestValidationError)   # registered for it only
    errors = [{"loc": list(e["loc"]), "msg": e["msg"].removeprefix("Value error, "), "type": e["type"]}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(deployment: str, config_path: str | None = None, cache_seconds: float = 2.0, *,
               db_url: str | None = None) -> FastAPI:
    """The service of `deployment`; the ledger is `db_url`, else where `monitors.ledger.database` finds it."""
    config = load_config(config_path)
    config.deployment(deployment)  # an unknown name fails here, not on the first request
    gates = GateCache(db_url or ledger_url(), deployment, cache_seconds)
    pipelines = Pipelines(config, deployment)

    def current_gate() -> GateStatus:
        try:
            return gates.current()
        except LedgerUnavailable as exc:
            raise HTTPException(503, detail={"error": "ledger unavailable", "deployment": deployment,
                                             "reason": str(exc)},
                                headers={"Retry-After": str(max(1, math.ceil(cache_seconds)))}) from None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:  # best effort: a first request should not wait for a model to load
            pipelines.get(gates.current().active_version)
        except EmbwardenError as exc:
            log.warning("%s: no model preloaded: %s", deployment, exc)
        yield
        gates.engine.dispose()

    app = FastAPI(title=f"embwarden: {deployment}", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/gates/{name}")
    def gate(name: str) -> dict[str, Any]:
        if name != deployment:
            raise HTTPException(404, detail=f"this service serves deployment {deployment!r} only")
        return current_gate().to_json()

    def open_gate() -> GateStatus:
        g = current_gate()
        if not g.is_open:
            raise HTTPException(503, detail={"error": "gate closed", "deployment": deployment, "reason": g.reason,
                                             "active_version": g.active_version},
                                headers={"Retry-After": str(RETRY_AFTER_CLOSED_S)})
        return g

    @app.post("/v1/embeddings")
    def embeddings(body: EmbeddingRequest) -> JSONResponse:
        g = open_gate()
        started = time.perf_counter()
        try:
            vectors = pipelines.embed(g.active_version, body.input)
        except EmbwardenError as exc:  # e.g. the ledger activated a version the file does not declare
            raise HTTPException(503, detail={"error": "version unavailable", "deployment": deployment,
                                             "reason": str(exc), "active_version": g.active_version}) from None
        # Asked again now that the vectors exist: under load a request waits for the encoder far
        # longer than the gate's staleness, and the gate may have closed (or the version changed)
        # meanwhile. Only an answer the gate allows at the moment it leaves is sent.
        now = open_gate()
        if now.active_version != g.active_version:
            raise HTTPException(503, detail={"error": "version changed", "deployment": deployment,
                                             "reason": f"active version changed from {g.active_version} to "
                                                       f"{now.active_version} while embedding; send again",
                                             "active_version": now.active_version},
                                headers={"Retry-After": "1"})
        log.info("%s/%s: embedded %d inputs in %.0f ms", deployment, g.active_version, len(body.input),
                 (time.perf_counter() - started) * 1000)
        data = [{"object": "embedding", "index": i, "embedding": _vector(vec, body.encoding_format)}
                for i, vec in enumerate(vectors)]
        usage = {"inputs": len(body.input), "characters": sum(len(t) for t in body.input)}
        return JSONResponse({"object": "list", "data": data, "model": f"{deployment}/{g.active_version}",
                             "usage": usage}, headers={VERSION_HEADER: str(g.active_version)})

    return app


def serve(deployment: str, host: str = "127.0.0.1", port: int = 8000, config_path: str | None = None) -> None:
    """Run the service under uvicorn (one process: the pipelines live in it)."""
    import uvicorn

    uvicorn.run(create_app(deployment, config_path), host=host, port=port)
