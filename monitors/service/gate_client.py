"""Ask embwarden's gate before embedding or serving vectors: a fail-closed, cached client.

    from gate_client import GateClient      # copied alone into your service, or monitors.service.gate_client
    gate = GateClient("http://embedder:8000/v1/gates/support-search")
    if not gate.is_open(): raise RuntimeError(f"embeddings paused: {gate.reason}")

The URL is the reference embedding service's `GET /v1/gates/{deployment}` (no credential) or the
Airflow plugin's `GET .../embwarden/api/gates/{deployment}`, which takes the read-only service token
as `Authorization: Bearer <token>`: pass `token=`, or set the environment variable
EMBWARDEN_GATE_TOKEN, read when `token` is None.

It fails closed: an audit closes the gate because vectors leak, so a gate that cannot be read (an
unreachable service, a timeout, an error status, an answer that is not a gate) reads as closed, with
a reason that says why and never holds the token. Redirects are not followed (the token would go
along). Answers, failures included, are cached for `cache_seconds`, shared by all threads, so that
asking before every request costs one request per period and a down gate is not hammered.

Standard library only, and no embwarden import: the file can be vendored (copied) into any service.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from types import TracebackType
from typing import Any

__all__ = ["GateClient", "TOKEN_ENV"]

TOKEN_ENV = "EMBWARDEN_GATE_TOKEN"
_MAX_BODY = 64 * 1024      # a gate is a few hundred bytes; more is not read
_SNIPPET = 200             # characters of a server's answer quoted in a reason


class GateClient:
    """One deployment's gate at `url`, read at most once per `cache_seconds`; `timeout` (seconds)
    bounds each connect and read. `token` (default: $EMBWARDEN_GATE_TOKEN) is sent as a Bearer token."""

    def __init__(self, url: str, token: str | None = None, cache_seconds: float = 5.0,
                 timeout: float = 2.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"gate url {url!r}: only http:// and https:// URLs with a host are accepted")
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        if token is not None and any(c in token for c in "\r\n\x00"):
            raise ValueError("the gate token holds a line break or NUL character")  # never the token itself
        self.url, self.cache_seconds, self.timeout = url, cache_seconds, timeout
        self._token = token or None
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._state: dict[str, Any] = {}

    def state(self) -> dict[str, Any]:
        """The gate's JSON (deployment, state, reason, active_version, since), at most `cache_seconds`
        old; `state` is "open" or "closed", and "closed" whenever the gate could not be read."""
        with self._lock:  # held while asking: concurrent callers wait for that one answer
            if time.monotonic() - self._read_at >= self.cache_seconds:
                try:
                    self._state = self._fetch()
                except Exception as exc:  # whatever went wrong, the gate reads closed
                    self._state = _closed(f"gate client error: {type(exc).__name__}: {exc}")
                if self._token and self._token in str(self._state.get("reason", "")):
                    self._state["reason"] = str(self._state["reason"]).replace(self._token, "<token>")
                self._read_at = time.monotonic()
            return dict(self._state)

    def is_open(self) -> bool:
        return self.state().get("state") == "open"

    @property
    def reason(self) -> str:
        return str(self.state().get("reason") or "")

    @property
    def active_version(self) -> str | None:
        version = self.state().get("active_version")
        return None if version is None else str(version)

    def close(self) -> None:
        """Nothing to release: each read opens and closes its own connection. Kept for `with`."""

    def __enter__(self) -> GateClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GateClient({self.url!r}, token={'set' if self._token else None})"

    def _fetch(self) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(self.url, headers=headers, method="GET")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read(_MAX_BODY)
        except urllib.error.HTTPError as exc:  # an answer, with an error status (or a redirect)
            try:
                status, raw = exc.code, _read(exc)
            finally:
                exc.close()
            if 300 <= status < 400:
                where = str(exc.headers.get("Location", ""))[:_SNIPPET] if exc.headers else ""
                return _closed(f"gate service answered {status}: a redirect to {where or '(nowhere)'}, not followed")
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            return _closed(f"gate service {self.url} unreachable: {_describe(exc, self.timeout)}")
        body: Any = None
        try:
            body, is_json = json.loads(raw), True
        except (ValueError, RecursionError):
            is_json = False
        text = raw.decode("utf-8", "replace").strip()[:_SNIPPET]
        if status == 200:
            if isinstance(body, dict) and body.get("state") in ("open", "closed"):
                return body
            what = "no gate state" if is_json else "a body that is not JSON"
            return _closed(f"gate service answered 200 with {what} (expected \"state\": \"open\" or "
                           f"\"closed\"): {text or '(empty)'}")
        detail = body.get("detail") if isinstance(body, dict) else None
        why = (detail.get("reason") or detail.get("error")) if isinstance(detail, dict) else detail
        return _closed(f"gate service answered {status}: {str(why)[:_SNIPPET] if why else text or '(no body)'}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not a gate: it reads closed, and the token never goes to another URL."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


def _read(response: Any) -> bytes:
    try:
        return bytes(response.read(_MAX_BODY) or b"")
    except (OSError, http.client.HTTPException):
        return b""


def _describe(exc: BaseException, timeout: float) -> str:
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, TimeoutError):
        return f"no answer within {timeout:g} s"
    return f"{type(cause).__name__}: {cause}"


def _closed(reason: str) -> dict[str, Any]:
    return {"deployment": None, "state": "closed", "reason": reason, "active_version": None, "since": None}
