"""Encoders behind HTTP embedding APIs: OpenAI-compatible `/v1/embeddings` and Hugging Face
text-embeddings-inference (TEI) `/embed`.

Texts go out in batches of `batch_size` over one pooled `httpx` client. A request that times out,
cannot connect, or is answered 429 or 5xx is retried up to `max_retries` times with exponential
backoff and jitter (a `Retry-After` header is honoured, up to `max_backoff_seconds`); 401/403 and
other 4xx answers fail at once, since they will be the same on a retry. `requests_per_second`
spaces request starts (retries included) at least 1/rate apart. Every answer is checked: one
vector per text, in order, finite, and of one dimension (the configured one, else that of the
first answer) — so a partial or mismatched answer is an EncoderError, never a short array.

This module knows nothing of Airflow (audits never does): `from_connection` reads anything shaped
like an Airflow connection (host, schema, port, password, extra_dejson), which monitors resolves
from the connection id. Error messages name the endpoint and the connection id, never the key;
logs carry counts and timings, never texts. Identical texts are not deduplicated: the API behind
the URL may add fresh noise per call, and that is what is being audited.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import logging
import random
import threading
import time
from functools import cached_property
from typing import Any

import httpx
import numpy as np

from audits.errors import EncoderError, EncoderUnavailable

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429})  # and every 5xx
DIMENSION_PROBE = "embwarden dimension probe"


class RateLimit:
    """Spaces calls at least `1 / per_second` apart (thread-safe); `None` does not limit."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def connection_url(conn: Any) -> str:
    """The base URL of an Airflow-style HTTP connection: `host` may be a whole URL; otherwise
    `schema` is the scheme (https when empty, so that a key never travels in clear by default)."""
    host = (conn.host or "").strip()
    if not host:
        raise ValueError("its host is empty")
    url = host if "://" in host else f"{conn.schema or 'https'}://{host}"
    if conn.port:
        url = str(httpx.URL(url).copy_with(port=int(conn.port)))
    return url


class HttpEncoder:
    """What the OpenAI and TEI encoders share: endpoint, client, retries, rate limit, checks."""

    api = "http"

    def __init__(self, url: str, model: str | None = None, *, api_key: str | None = None,
                 headers: dict[str, str] | None = None, connection_id: str | None = None,
                 dimension: int | None = None, batch_size: int = 64, timeout_seconds: float = 30.0,
                 max_retries: int = 4, requests_per_second: float | None = None,
                 backoff_seconds: float = 0.5, max_backoff_seconds: float = 30.0) -> None:
        if not url or not url.startswith(("http://", "https://")):
            where = f" (connection {connection_id!r})" if connection_id else ""
            raise EncoderError(f"{self.api} encoder{where}: url {url!r} is not an http:// or https:// URL")
        if batch_size < 1 or max_retries < 0 or timeout_seconds <= 0:
            raise EncoderError(f"{self.api} encoder: batch_size >= 1, max_retries >= 0 and timeout_seconds > 0 "
                               f"expected, found {batch_size}, {max_retries}, {timeout_seconds}")
        self.endpoint = self._endpoint(url.rstrip("/"))
        try:
            u = httpx.URL(self.endpoint)
        except httpx.InvalidURL as exc:
            raise EncoderError(f"{self.api} encoder: url {url!r} is not a valid URL ({exc})") from None
        self.model = model
        self.connection_id = connection_id
        # The endpoint without credentials or query string: what errors, logs and the fingerprint show.
        self.shown_endpoint = f"{u.scheme}://{u.host}{f':{u.port}' if u.port else ''}{u.path}"
        self.label = f"{self.api} encoder {self.shown_endpoint}" + (
            f" (connection {connection_id!r})" if connection_id else "")
        self.batch_size = batch_size
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.rate_limit = RateLimit(requests_per_second)
        self._configured_dimension = dimension
        self._dimension: int | None = dimension
        self._headers = {"User-Agent": "embwarden", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._lock = threading.Lock()

    @classmethod
    def from_connection(cls, conn: Any, connection_id: str, url: str | None = None, model: str | None = None,
                        **settings: Any) -> HttpEncoder:
        """An encoder reached through an Airflow connection: host/schema/port give the base URL
        (unless `url` is given), the password is the bearer token, and the extra may hold `model`
        and `headers` (a mapping of extra request headers)."""
        extra = conn.extra_dejson or {}
        try:
            url = url or connection_url(conn)
        except (ValueError, httpx.InvalidURL) as exc:
            raise EncoderError(f"{cls.api} encoder: Airflow connection {connection_id!r}: {exc}") from None
        headers = extra.get("headers") or {}
        if not isinstance(headers, dict):
            raise EncoderError(f"{cls.api} encoder: Airflow connection {connection_id!r}: extra 'headers' must be "
                               f"a mapping of header names to values, found {type(headers).__name__}")
        return cls(url, model or extra.get("model"), api_key=conn.password or None,
                   headers={str(k): str(v) for k, v in headers.items()}, connection_id=connection_id, **settings)

    # -- what the API looks like: overridden per API ---------------------------------------------
    @staticmethod
    def _endpoint(base: str) -> str:
        raise NotImplementedError

    def _payload(self, texts: list[str]) -> dict:
        raise NotImplementedError

    def _vectors(self, body: Any, count: int) -> list:
        """The answer's vectors, in input order; raises EncoderError on a malformed answer."""
        raise NotImplementedError

    def _identity(self) -> dict:
        return {}

    # -- the Encoder protocol --------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        """The configured dimension, else that of the API's first answer (one call when none came yet)."""
        if self._dimension is None:
            return int(self.encode([DIMENSION_PROBE]).shape[1])  # the first answer sets _dimension too
        return self._dimension

    @cached_property
    def fingerprint(self) -> str:
        """API, endpoint, model and dimension, hashed; neither the key nor the headers."""
        identity = {"api": self.api, "endpoint": self.shown_endpoint, "model": self.model,
                    "dimension": self.dimension, **self._identity()}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        started = time.perf_counter()
        parts = [self._batch(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        log.debug("%s: encoded %d texts in %d requests in %.1f s", self.label, len(texts), len(parts),
                 time.perf_counter() - started)
        return np.vstack(parts)

    def close(self) -> None:
        if "_client" in self.__dict__:
            self.__dict__.pop("_client").close()

    def __enter__(self) -> HttpEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one batch -------------------------------------------------------------------------------
    def _batch(self, texts: list[str]) -> np.ndarray:
        vectors = self._vectors(self._post(self._payload(texts)), len(texts))
        if len(vectors) != len(texts):
            raise EncoderError(f"{self.label}: answered {len(vectors)} vectors for {len(texts)} texts")
        try:
            out = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise EncoderError(f"{self.label}: the answer's vectors are not lists of numbers of one length") from None
        if out.ndim != 2 or out.shape[1] == 0:
            raise EncoderError(f"{self.label}: the answer's vectors are not lists of numbers of one length")
        if not np.isfinite(out).all():
            raise EncoderError(f"{self.label}: the answer holds NaN or infinite values")
        with self._lock:
            if self._dimension is None:
                self._dimension = out.shape[1]
            elif out.shape[1] != self._dimension:
                why = "the configured dimension" if self._configured_dimension else "the dimension of its first answer"
                raise EncoderError(f"{self.label}: answered vectors of dimension {out.shape[1]}, expected "
                                   f"{self._dimension} ({why})")
        return out

    @cached_property
    def _client(self) -> httpx.Client:
        timeout = httpx.Timeout(self.timeout_seconds, connect=min(10.0, self.timeout_seconds))
        return httpx.Client(timeout=timeout, headers=self._headers, limits=httpx.Limits(max_connections=8))

    def _post(self, payload: dict) -> Any:
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            self.rate_limit.wait()
            retry_after = None
            try:
                resp = self._client.post(self.endpoint, json=payload)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout_seconds:g} s"
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise EncoderError(f"{self.label}: {exc}") from None
            except httpx.TransportError as exc:
                last = f"cannot reach it ({type(exc).__name__}: {exc})"
            else:
                status = resp.status_code
                if status in (401, 403):
                    hint = (f"check the password (API key) of Airflow connection {self.connection_id!r}"
                            if self.connection_id else "the API needs a key: name an Airflow connection that holds it")
                    raise EncoderError(f"{self.label}: credentials rejected (HTTP {status}: {_message(resp)}); {hint}")
                if status < 300:
                    try:
                        return resp.json()
                    except ValueError:
                        raise EncoderError(f"{self.label}: answered HTTP {status}, not with JSON") from None
                if status < 400:
                    raise EncoderError(f"{self.label}: redirected (HTTP {status}); configure the URL it redirects to")
                if status not in RETRY_STATUS and status < 500:
                    raise EncoderError(f"{self.label}: the API refused the request (HTTP {status}: {_message(resp)})")
                last = f"HTTP {status}: {_message(resp)}"
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            if attempt + 1 < attempts:
                delay = self._delay(attempt, retry_after)
                log.warning("%s: attempt %d of %d failed (%s); retrying in %.1f s", self.label, attempt + 1, attempts,
                            last, delay)
                time.sleep(delay)
        raise EncoderUnavailable(f"{self.label}: gave up after {attempts} attempts; the last: {last}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        backoff = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** attempt)
        return backoff * random.uniform(0.5, 1.0)  # jitter: retrying clients do not stampede together


class OpenAIEncoder(HttpEncoder):
    """An OpenAI-compatible embeddings API: POST {base}/v1/embeddings with {"input", "model"}.

    `url` is the server's base URL (…/v1 and …/v1/embeddings are accepted too); `dimensions` is
    OpenAI's optional request parameter that shortens text-embedding-3 vectors, and also the
    expected dimension when `dimension` is not given.
    """

    api = "openai"

    def __init__(self, url: str, model: str | None = None, *, dimensions: int | None = None, **settings: Any) -> None:
        if dimensions is not None and settings.get("dimension") not in (None, dimensions):
            raise EncoderError(f"openai encoder: dimension {settings['dimension']} and dimensions {dimensions} differ")
        settings["dimension"] = settings.get("dimension") or dimensions
        super().__init__(url, model, **settings)
        if not self.model:
            raise EncoderError(f"{self.label}: no model given (set `model`, or `model` in the connection's extra)")
        self.dimensions = dimensions

    @staticmethod
    def _endpoint(base: str) -> str:
        if base.endswith("/embeddings"):
            return base
        return base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings")

    def _payload(self, texts: list[str]) -> dict:
        payload: dict[str, Any] = {"input": texts, "model": self.model}
        if self.dimensions:
            payload["dimensions"] = self.dimensions
        return payload

    def _vectors(self, body: Any, count: int) -> list:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(d, dict) and "embedding" in d for d in data):
            raise EncoderError(f"{self.label}: the answer is not an embeddings list "
                               "({'data': [{'index', 'embedding'}, ...]} expected)")
        if len(data) != count:
            raise EncoderError(f"{self.label}: answered {len(data)} vectors for {count} texts")
        index = [d.get("index", i) for i, d in enumerate(data)]
        if not all(type(i) is int for i in index) or sorted(index) != list(range(count)):
            raise EncoderError(f"{self.label}: the answer's indices are not 0..{count - 1}, once each")
        return [_floats(data[i]["embedding"]) for i in np.argsort(index)]

    def _identity(self) -> dict:
        return {"dimensions": self.dimensions}


class TEIEncoder(HttpEncoder):
    """Hugging Face text-embeddings-inference: POST {base}/embed with {"inputs", "normalize", "truncate"},
    answered with a list of vectors. TEI serves one model: `model` only names it in the fingerprint
    (change it when the server's model changes, so cached embeddings are not reused)."""

    api = "tei"

    def __init__(self, url: str, model: str | None = None, *, normalize: bool = True, truncate: bool = True,
                 **settings: Any) -> None:
        settings.setdefault("batch_size", 32)  # TEI's default --max-client-batch-size
        super().__init__(url, model, **settings)
        self.normalize = normalize
        self.truncate = truncate

    @staticmethod
    def _endpoint(base: str) -> str:
        return base if base.endswith("/embed") else base + "/embed"

    def _payload(self, texts: list[str]) -> dict:
        return {"inputs": texts, "normalize": self.normalize, "truncate": self.truncate}

    def _vectors(self, body: Any, count: int) -> list:
        if not isinstance(body, list):
            raise EncoderError(f"{self.label}: the answer is not a list of vectors")
        return body

    def _identity(self) -> dict:
        return {"normalize": self.normalize, "truncate": self.truncate}


HTTP_ENCODERS: dict[str, type[HttpEncoder]] = {"openai": OpenAIEncoder, "tei": TEIEncoder}


def _floats(embedding: Any) -> Any:
    """A float list, or little-endian float32 bytes in base64 (what the openai client asks for)."""
    if isinstance(embedding, str):
        try:
            return np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
        except ValueError:
            return None
    return embedding


def _message(resp: Any, limit: int = 300) -> str:
    """The API's own error message (OpenAI, TEI, FastAPI shapes), without any echo of the input."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
        detail = body.get("detail")
        if msg is None and isinstance(detail, str):
            msg = detail
        elif msg is None and isinstance(detail, dict):
            msg = ": ".join(str(detail[k]) for k in ("error", "reason") if detail.get(k))
        elif msg is None and isinstance(detail, list):  # FastAPI validation errors: loc and msg only
            msg = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail
                            if isinstance(d, dict))
        msg = msg or body.get("message")
    elif resp.headers.get("content-type", "").startswith("text/plain"):
        msg = resp.text
    text = " ".join(str(msg or resp.reason_phrase or "no message").split())
    return text if len(text) <= limit else text[:limit] + "…"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
