"""Who may call a view: the one place that turns a request into a user or a 401/403.

Every view that needs a signed-in user calls `current_user`; every admin endpoint
calls `require_admin`, so no endpoint can forget a check the others make (the purge
API once skipped the verified check).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server import keys
from server.auth.emails import EmailError, email_key
from server.auth.tokens import TokenError
from server.db import queries
from server.http import APIError

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "not authenticated", UNAUTHORIZED)
    return token.strip()


async def current_user(request: web.Request) -> Any:
    """The active user named by the request's bearer token, or a 401."""
    try:
        claims = request.app[keys.TOKENS].verify(bearer_token(request))
    except TokenError as exc:
        raise APIError(401, str(exc), UNAUTHORIZED) from None
    user = await queries.user_by_id(request.app[keys.POOL], claims.user_id)
    if user is None or not user["is_active"]:
        raise APIError(401, "invalid token", UNAUTHORIZED)
    return user


def is_admin(user: Any, admin_emails: frozenset[str]) -> bool:
    """A verified user whose normalised email is in ADMIN_EMAILS (normalised alike)."""
    try:
        key = email_key(user["email"])
    except EmailError:
        return False
    return bool(user["is_verified"]) and key in admin_emails


async def require_admin(request: web.Request) -> Any:
    """The user, when an admin; 401 without a valid token, 403 for anyone else."""
    user = await current_user(request)
    if not is_admin(user, request.app[keys.SETTINGS].admin_emails):
        raise APIError(
            403, "only administrators may do this (a verified email listed in ADMIN_EMAILS)"
        )
    return user
