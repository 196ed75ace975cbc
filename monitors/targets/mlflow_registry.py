"""A small client of the MLflow Model Registry's REST API (2.0), the calls embwarden makes and no more:

    registry = MlflowRegistry.from_connection(conn)          # an Airflow `http` connection
    registry.set_alias("support-search", "champion", "4")   # POST registered-models/alias
    registry.alias_version("support-search", "champion")    # GET  registered-models/alias -> "4" | None
    registry.set_version_tag("support-search", "4", "embwarden.gate", "closed")   # POST model-versions/set-tag
    registry.version_tags("support-search", "4")            # GET  model-versions/get -> {"embwarden.gate": ...}

REST only, with httpx: embwarden never imports `mlflow`, whose dependencies clash with Airflow's.
Checked against MLflow 3.17 (mlflow/server/handlers.py, the registry's SQL store, a running server):

- request fields are strings: a version sent as the number 2 is refused (400 INVALID_PARAMETER_VALUE);
- an error answers JSON {"error_code", "message"}: 404 RESOURCE_DOES_NOT_EXIST for an unknown model
  or version, 400 INVALID_PARAMETER_VALUE for a bad value (an alias name with a space, the reserved
  aliases `latest` and `v<N>`) and also for an alias the model does not have ("Registered model
  alias champion not found."), which `alias_version` answers as None;
- the server's host check answers 403 in plain text ("Invalid Host header ...") when it is reached
  under a name it does not allow (its --allowed-hosts), and an authenticating proxy or the basic-auth
  app 401/403: such bodies are quoted, shortened, as the message.

Connection errors, timeouts, 5xx and 429 raise MlflowUnavailable (worth retrying later); other 4xx
MlflowError. Messages name the call, its model / version / alias, MLflow's error_code and message,
and never the credentials.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from audits.errors import EmbwardenError

API = "/api/2.0/mlflow"
TIMEOUT_S = 10.0


class MlflowError(EmbwardenError):
    """MLflow refused the call (a 4xx answer): an unknown model or version, a bad alias, no permission.
    A retry would meet the same. Carries what MLflow said, for callers that tell one refusal from another."""

    def __init__(self, message: str, *, status_code: int | None = None, error_code: str | None = None,
                 mlflow_message: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.mlflow_message = mlflow_message


class MlflowUnavailable(EmbwardenError):
    """MLflow could not be reached or did not answer usefully (refused, timed out, 5xx, 429):
    worth retrying later."""


class MlflowRegistry:
    def __init__(self, base_url: str, auth: tuple[str, str] | None = None, token: str | None = None,
                 timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MlflowError(f"MLflow: base URL {_without_userinfo(base_url)!r} is not an http:// or https:// URL")
        if timeout <= 0:
            raise MlflowError(f"MLflow: timeout must be positive, found {timeout}")
        if parts.username is not None and auth is None and token is None:   # https://login:password@host
            auth = (unquote(parts.username), unquote(parts.password or ""))
        self.base_url = _without_userinfo(base_url.strip()).rstrip("/")
        self.timeout = float(timeout)
        self._auth = None if token else auth       # a token wins over a login: one Authorization header
        self._headers = {"User-Agent": "embwarden", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # Never in a message: the password and the token (a short one would blot out ordinary words).
        self._secrets = [s for s in (token, auth[1] if auth else None) if s and len(s) >= 6]

    @classmethod
    def from_connection(cls, conn: Any) -> MlflowRegistry:
        """A client for an Airflow connection (anything with host, port, schema, login, password and
        extra_dejson): `host` may be a whole URL (https://mlflow.example.com/prefix), else the base URL
        is schema://host:port (schema `http` when empty); login and password give HTTP basic auth, the
        extra's `token` a bearer token (it wins over a login), the extra's `timeout` the seconds per call."""
        from monitors.targets.connections import base_url

        url = base_url(conn)
        extra = getattr(conn, "extra_dejson", None) or {}
        login, password = getattr(conn, "login", None), getattr(conn, "password", None)
        try:
            timeout = float(extra.get("timeout", TIMEOUT_S))
        except (TypeError, ValueError):
            raise MlflowError(f"MLflow: the connection's extra 'timeout' must be a number of seconds, "
                              f"found {extra.get('timeout')!r}") from None
        return cls(url, auth=(login, password or "") if login else None,
                   token=extra.get("token") or None, timeout=timeout)

    # -- the registry ----------------------------------------------------------------------------
    def set_alias(self, model: str, alias: str, version: str | int) -> None:
        """Point `alias` of `model` at `version` (creating the alias, or moving it)."""
        self._call("set_alias", "POST", "registered-models/alias",
                   {"name": model, "alias": alias, "version": str(version)})

    def alias_version(self, model: str, alias: str) -> str | None:
        """The version `alias` of `model` points at, or None when the model has no such alias."""
        payload = {"name": model, "alias": alias}
        try:
            body = self._call("alias_version", "GET", "registered-models/alias", payload)
        except MlflowError as exc:
            # MLflow answers a missing alias 400 INVALID_PARAMETER_VALUE "Registered model alias X not found."
            # (an unknown model is 404 RESOURCE_DOES_NOT_EXIST, and stays an error).
            if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST") and \
                    f"alias {alias} not found".lower() in (exc.mlflow_message or "").lower():
                return None
            raise
        version = _field(body, "model_version", _what("alias_version", payload)).get("version")
        if version is None:
            raise MlflowError(f"{_what('alias_version', payload)}: the answer's model_version has no version")
        return str(version)

    def set_version_tag(self, model: str, version: str | int, key: str, value: str) -> None:
        """Set tag `key` = `value` on version `version` of `model` (overwriting it)."""
        self._call("set_version_tag", "POST", "model-versions/set-tag",
                   {"name": model, "version": str(version), "key": key, "value": value})

    def version_tags(self, model: str, version: str | int) -> dict[str, str]:
        """The tags of version `version` of `model`."""
        payload = {"name": model, "version": str(version)}
        body = self._call("version_tags", "GET", "model-versions/get", payload)
        mv = _field(body, "model_version", _what("version_tags", payload))
        return {str(t["key"]): str(t.get("value", "")) for t in mv.get("tags", [])}

    # -- HTTP ------------------------------------------------------------------------------------
    def _call(self, method_name: str, verb: str, path: str, payload: dict[str, str]) -> dict:
        what = _what(method_name, payload)
        url = f"{self.base_url}{API}/{path}"
        try:
            with httpx.Client(auth=self._auth, headers=self._headers, timeout=self.timeout) as client:
                if verb == "GET":
                    response = client.get(url, params=payload)
                else:
                    response = client.post(url, json=payload)
        except httpx.HTTPError as exc:
            raise MlflowUnavailable(self._scrub(f"{what}: {self.base_url} did not answer "
                                                f"({type(exc).__name__}: {exc})")) from None
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                raise MlflowError(self._scrub(f"{what}: {self.base_url} answered 200 with no JSON "
                                              f"(not an MLflow server?): {_short(response.text)}")) from None
            if not isinstance(body, dict):
                raise MlflowError(f"{what}: answered 200 with JSON {type(body).__name__}, expected an object")
            return body
        error_code, message = _error_of(response)
        text = self._scrub(f"{what}: HTTP {response.status_code}" + (f" {error_code}" if error_code else "")
                           + f": {message}")
        if response.status_code >= 500 or response.status_code == 429:
            raise MlflowUnavailable(text)
        raise MlflowError(text, status_code=response.status_code, error_code=error_code,
                          mlflow_message=self._scrub(message))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _what(method_name: str, payload: dict[str, str]) -> str:
    named = [("model", payload.get("name")), ("version", payload.get("version")), ("alias", payload.get("alias")),
             ("key", payload.get("key"))]
    return f"MLflow {method_name}(" + ", ".join(f"{k}={v!r}" for k, v in named if v is not None) + ")"


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error_code" in body or "message" in body):
        return (str(body["error_code"]) if body.get("error_code") else None), str(body.get("message", ""))
    return None, _short(response.text) or response.reason_phrase


def _field(body: dict, name: str, what: str) -> dict:
    value = body.get(name)
    if not isinstance(value, dict):
        raise MlflowError(f"{what}: the answer has no {name!r} object")
    return value


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
