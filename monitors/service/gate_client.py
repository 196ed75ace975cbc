"""A tiny client of the embedding service's gate endpoint, for services that embed on their own.

    gate = GateClient("http://embedder:8000/v1/gates/support-search")
    if not gate.is_open(): raise RuntimeError(f"embeddings paused: {gate.reason}")

It fails closed: an unreachable service, an error status or an unexpected answer reads as a
closed gate whose reason says why. Answers, failures included, are cached for `cache_seconds`
so that asking before every request costs nothing.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import httpx


class GateClient:
    def __init__(self, url: str, cache_seconds: float = 5.0, timeout: float = 2.0) -> None:
        self.url, self.cache_seconds = url, cache_seconds
        self._http = httpx.Client(timeout=timeout)
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._state: dict[str, Any] = {}

    def state(self) -> dict[str, Any]:
        """The gate's JSON (deployment, state, reason, active_version, since), at most `cache_seconds` old."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.cache_seconds:
                self._state = self._fetch()
                self._read_at = time.monotonic()
            return dict(self._state)

    def is_open(self) -> bool:
        return self.state()["state"] == "open"

    @property
    def reason(self) -> str:
        return str(self.state().get("reason", ""))

    def close(self) -> None:
        self._http.close()

    def _fetch(self) -> dict[str, Any]:
        try:
            response = self._http.get(self.url)
        except httpx.HTTPError as exc:
            return _closed(f"gate service {self.url} unreachable: {type(exc).__name__}: {exc}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and body.get("state") in ("open", "closed"):
            return body
        detail = body.get("detail") if isinstance(body, dict) else None
        why = detail.get("reason") if isinstance(detail, dict) else detail
        return _closed(f"gate service answered {response.status_code}: {why or response.text[:200]}")


def _closed(reason: str) -> dict[str, Any]:
    return {"deployment": None, "state": "closed", "reason": reason, "active_version": None, "since": None}
