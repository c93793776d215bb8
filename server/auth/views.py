"""REST views for accounts: signup, login, verify, me, refresh."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from email_validator import EmailNotValidError, validate_email

from server import keys
from server.auth.guards import UNAUTHORIZED, current_user
from server.auth.passwords import password_problem
from server.auth.tokens import VERIFY, TokenError
from server.db import queries
from server.http import APIError, check_fields, json_response, read_form_or_json, read_json

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

LOGIN_WINDOW_S = 60
# One address may fail this many times more than one email (a NAT hides many users).
ADDRESS_FACTOR = 5


def normalise_email(raw: str) -> str:
    try:
        return validate_email(raw, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError as exc:
        raise APIError(422, f"email: {exc}") from None


def user_body(user: Any) -> dict[str, Any]:
    return {
        "id": user["id"],
        "email": user["email"],
        "is_active": user["is_active"],
        "is_verified": user["is_verified"],
        "created_at": user["created_at"],
    }


def login_body(app: web.Application, user_id: int) -> dict[str, Any]:
    tokens = app[keys.TOKENS]
    token, _ = tokens.issue(user_id)
    return {"access_token": token, "token_type": "bearer", "expires_in": tokens.access_ttl_s}


def client_address(request: web.Request) -> str:
    if request.app[keys.SETTINGS].trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.remote or "unknown"


def send_verification(app: web.Application, user_id: int, email: str, base_url: str) -> None:
    """Record a single-use verification link and mail it in the background."""

    async def record_and_send() -> None:
        token, claims = app[keys.TOKENS].issue(user_id, VERIFY)
        await queries.add_verification(
            app[keys.POOL], claims.jti, user_id, datetime.fromtimestamp(claims.expires_at, UTC)
        )
        link = f"{base_url}/api/v1/auth/verify?token={token}"
        await app[keys.MAILER].send(
            email,
            "Confirm your email address",
            f"Welcome!\n\nConfirm your email address by opening this link:\n\n{link}\n\n"
            "If you did not sign up, ignore this message.\n",
        )

    app[keys.MAILER].run_later(record_and_send(), f"verification email to {email}")


@routes.post("/api/v1/auth/signup")
async def signup(request: web.Request) -> web.Response:
    data = check_fields(await read_json(request), {"email": str, "password": str})
    email = normalise_email(data["email"])
    if problem := password_problem(data["password"]):
        raise APIError(422, problem)
    app = request.app
    hashed = await app[keys.HASHER].hash(data["password"])
    user = await queries.create_user(app[keys.POOL], email, hashed)
    if user is None:
        raise APIError(409, "an account with this email already exists")
    settings = app[keys.SETTINGS]
    base_url = settings.public_url or f"{request.scheme}://{request.host}"
    send_verification(app, user["id"], user["email"], base_url.rstrip("/"))
    body = user_body(user)
    if not settings.require_verified_email:
        body.update(login_body(app, user["id"]))
    return json_response(body, 201)


async def _check_login_rate(request: web.Request, keys_limits: list[tuple[str, int]]) -> None:
    pool = request.app[keys.POOL]
    for key, limit in keys_limits:
        hits, left_s = await queries.hits_in_window(pool, key, LOGIN_WINDOW_S)
        if hits >= limit:
            retry = max(1, int(left_s + 0.999))
            raise APIError(
                429,
                "too many failed logins, try again later",
                {"Retry-After": str(retry)},
            )


@routes.post("/api/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    kind, raw = await read_form_or_json(request)
    # The OAuth2 form names the email `username`; JSON clients may use either name.
    user_field = (
        "username"
        if kind == "form" or (isinstance(raw, dict) and "email" not in raw and "username" in raw)
        else "email"
    )
    data = check_fields(raw, {user_field: str, "password": str})
    email, password = data[user_field].strip(), data["password"]
    app = request.app
    settings = app[keys.SETTINGS]
    limit = settings.login_rate_per_minute
    rate_keys = [
        (f"login:email:{email.lower()}", limit),
        (f"login:addr:{client_address(request)}", limit * ADDRESS_FACTOR),
    ]
    await _check_login_rate(request, rate_keys)

    user = await queries.user_by_email(app[keys.POOL], email) if "\x00" not in email else None
    hashed = user["hashed_password"] if user else None
    ok = await app[keys.HASHER].verify(password, hashed) and user["is_active"]
    if not ok:
        for key, _ in rate_keys:
            await queries.add_hit(app[keys.POOL], key, LOGIN_WINDOW_S)
        raise APIError(401, "incorrect email or password", UNAUTHORIZED)
    if settings.require_verified_email and not user["is_verified"]:
        raise APIError(403, "verify your email address before logging in")
    await queries.clear_hits(app[keys.POOL], rate_keys[0][0])
    return json_response(login_body(app, user["id"]))


@routes.get("/api/v1/auth/verify")
async def verify(request: web.Request) -> web.Response:
    token = request.query.get("token", "")
    try:
        claims = request.app[keys.TOKENS].verify(token, VERIFY)
    except TokenError as exc:
        raise APIError(400, f"verification link is not valid: {exc}") from None
    if not await queries.use_verification(request.app[keys.POOL], claims.jti, claims.user_id):
        raise APIError(400, "verification link is not valid: already used or unknown")
    user = await queries.user_by_id(request.app[keys.POOL], claims.user_id)
    return json_response({"detail": "email verified", "user": user_body(user)})


@routes.get("/api/v1/auth/me")
async def me(request: web.Request) -> web.Response:
    return json_response(user_body(await current_user(request)))


@routes.post("/api/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    user = await current_user(request)
    return json_response(login_body(request.app, user["id"]))
