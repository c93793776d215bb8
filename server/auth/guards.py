"""Who may call a view: the one place that turns a request into a user or a 401/403.

Every view that needs a signed-in user calls `current_user`; every admin endpoint
calls `require_admin`, so no endpoint can forget a check the others make (the purge
API once skipped the verified check).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server import keys
from server.auth.tokens import TokenError
from server.http import APIError

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "not authenticated", UNAUTHORIZED)
    return token.strip()


async def token_user(app: web.Application, token: str) -> Any:
    """The user an access token names, read now: TokenError unless the token is sound,
    the user exists and is active, and the token's generation is the user's (tokens
    issued before verification or a password change are revoked). REST and every
    WebSocket `auth` ask this."""
    claims = app[keys.TOKENS].verify(token)
    user = await app[keys.USERS].get(claims.user_id)
    if user is None or not user["is_active"] or user["token_generation"] != claims.generation:
        raise TokenError("invalid token")
    return user


async def current_user(request: web.Request) -> Any:
    """The active user named by the request's bearer token, or a 401."""
    try:
        return await token_user(request.app, bearer_token(request))
    except TokenError as exc:
        raise APIError(401, str(exc), UNAUTHORIZED) from None


async def guest_of(request: web.Request) -> Any:
    """For signup, login and identify: the guest the request's `Authorization` names, or
    None without the header or for an account's token (ignored); 401 for a bad token."""
    if "Authorization" not in request.headers:
        return None
    user = await current_user(request)
    return user if user["is_guest"] else None


def is_admin(user: Any, admin_emails: frozenset[str]) -> bool:
    """A verified user whose normalised email is in ADMIN_EMAILS (normalised alike)."""
    return bool(user["is_verified"]) and user["email_key"] in admin_emails


async def require_admin(request: web.Request) -> Any:
    """The user, when an admin; 401 without a valid token, 403 for anyone else."""
    user = await current_user(request)
    if not is_admin(user, request.app[keys.SETTINGS].admin_emails):
        raise APIError(
            403, "only administrators may do this (a verified email listed in ADMIN_EMAILS)"
        )
    return user
