"""Who may use the plugin: Airflow's own users, resolved by Airflow's own code.

The API server does not authenticate plugin apps, so every route depends on one of these:

- `api_user`: Airflow's `get_user` (JWT from `Authorization: Bearer` or the `_token` cookie,
  checked by the configured auth manager); 401 without a credential.
- `page_user`: the same, but a browser without a valid credential is redirected to the auth
  manager's login page (`get_url_login(next_url=...)`), coming back here afterwards.
- `writer`: an `api_user` whom the auth manager allows `POST` on the custom view `embwarden`
  (`is_authorized_custom_view`). SimpleAuthManager grants every custom view to every role
  whatever the method, so with it the user must also have its `admin` role. Writes take JSON only
  (`Content-Type: application/json`), which a cross-site form cannot send.
- `gate_reader`: an Airflow user, or a service presenting the read-only token in
  `EMBWARDEN_GATE_TOKEN` as `Authorization: Bearer <token>` (compared with hmac.compare_digest).
"""

from __future__ import annotations

import hmac
import os
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

RESOURCE = "embwarden"
TOKEN_ENV = "EMBWARDEN_GATE_TOKEN"
SERVICE = "service-token"


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


class LoginRequired(Exception):
    """A page was asked for without a valid Airflow session: send the browser to the login page."""

    def __init__(self, next_url: str):
        super().__init__(next_url)
        self.next_url = next_url


api_user = get_user


async def page_user(request: Request,
                    credentials: Credentials) -> BaseUser:
    try:
        return await get_user(request, None, credentials)
    except HTTPException as exc:
        if exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
            raise LoginRequired(str(request.url)) from None
        raise


def login_url(next_url: str) -> str:
    return get_auth_manager().get_url_login(next_url=next_url)


def user_name(user: BaseUser) -> str:
    return user.get_name()


def may_write(user: BaseUser) -> bool:
    try:
        manager = get_auth_manager()
    except Exception:  # no auth manager set up (e.g. the app outside the API server): nobody writes
        return False
    if not manager.is_authorized_custom_view(method="POST", resource_name=RESOURCE, user=user):
        return False
    try:
        from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    except ImportError:  # pragma: no cover - always shipped with Airflow 3
        return True
    if isinstance(manager, SimpleAuthManager):
        return (getattr(user, "role", None) or "").upper() == "ADMIN"
    return True


def _is_service_token(credentials: HTTPAuthorizationCredentials | None) -> bool:
    expected = os.environ.get(TOKEN_ENV, "")
    return bool(expected and credentials and credentials.scheme.lower() == "bearer"
                and hmac.compare_digest(credentials.credentials.encode(), expected.encode()))


def require_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "writes take a JSON body (Content-Type: application/json) only")


async def writer(request: Request,
                 credentials: Credentials) -> BaseUser:
    if _is_service_token(credentials):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the service token is read-only")
    user = await get_user(request, None, credentials)
    if not may_write(user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{user_name(user)} may not change embwarden's thresholds "
                                                       "or gates (the admin role is needed)")
    require_json(request)
    return user


async def gate_reader(request: Request,
                      credentials: Credentials) -> str:
    if _is_service_token(credentials):
        return SERVICE
    return user_name(await get_user(request, None, credentials))
