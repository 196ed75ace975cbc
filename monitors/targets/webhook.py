"""A CD system's webhook: each Change POSTed as JSON, signed with HMAC-SHA256.

    Embwarden-Signature: t=1764567890,v1=<hex HMAC-SHA256(secret, "1764567890." + body)>
    Embwarden-Event-Id: support-search-42        (also `event_id` in the body; the same on retries)

The secret is the connection's password. A receiver recomputes the HMAC over the timestamp and the
raw body, compares in constant time, refuses a timestamp older than its tolerance (a replay) and an
event id it has already acted on (a retry or a replay within the tolerance) with 409, which embwarden
reads as "taken" (the answer to an earlier attempt may have been lost): `verify` does the first two,
in the standard library only, so a receiver can copy it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

from monitors.targets import Change, TargetUnavailable
from monitors.targets.connections import base_url, connection

SIGNATURE_HEADER = "Embwarden-Signature"
EVENT_HEADER = "Embwarden-Event-Id"
TOLERANCE_S = 300
TIMEOUT_S = 10.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class SignatureError(ValueError):
    """The request is not a fresh event signed with the shared secret."""


def verify(secret: str, body: bytes, header: str | None, tolerance_s: float = TOLERANCE_S,
           now: float | None = None) -> dict:
    """The event of a signed request (`body` as received, `header` = Embwarden-Signature), or
    SignatureError when the signature is missing, wrong, or older than `tolerance_s`."""
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    if not re.fullmatch(r"[0-9]{1,12}", parts.get("t", "")) or "v1" not in parts:
        raise SignatureError(f"{SIGNATURE_HEADER}: expected t=<unix time>,v1=<hex>")
    timestamp = int(parts["t"])
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected.encode(), parts["v1"].encode("utf-8", "replace")):
        raise SignatureError("signature does not match the body")
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} is outside the {tolerance_s:.0f} s tolerance (a replay?)")
    return json.loads(body)


class WebhookTarget:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.name = cfg.name

    def push(self, change: Change) -> None:
        import httpx

        conn = connection(self.cfg.connection)
        if not conn.password:
            raise TargetUnavailable(f"{self.name}: the connection has no password; it is the signing secret")
        url = base_url(conn).rstrip("/") + ("/" + self.cfg.endpoint.lstrip("/") if self.cfg.endpoint else "")
        body = json.dumps(change.to_json(), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(conn.password, body, int(time.time())),
                   EVENT_HEADER: change.event_id, "Idempotency-Key": change.event_id}
        try:
            timeout = float((conn.extra_dejson or {}).get("timeout", TIMEOUT_S))
        except (TypeError, ValueError):
            raise TargetUnavailable(f"{self.name}: the connection's extra 'timeout' must be a number of "
                                    "seconds") from None
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise TargetUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from None
        # 409: the receiver has this event id already (an earlier attempt whose answer was lost): taken.
        if not (200 <= response.status_code < 300 or response.status_code == 409):
            raise TargetUnavailable(f"{self.name}: answered {response.status_code}: {response.text[:200]}")
