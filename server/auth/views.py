"""REST views for accounts: signup, login, verify, password, me, refresh.

Opening the verification link proves control of the mailbox, not knowledge of the
password: anyone may sign up with an address first (an admin's, say), and the link
goes to the real owner. So using the link revokes everything the account had before,
every token (its generation moves on) and the password, and leaves only what the
opener chose: `POST /api/v1/auth/verify` with a password (the page the email links
to), or, through the contract's `GET`, no password until the opener sets one with
the token that GET answers.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from server import keys
from server.auth.emails import EmailError, email_key, parse_email
from server.auth.guards import UNAUTHORIZED, current_user, guest_of
from server.auth.identity import IdentityError, verify_identity
from server.auth.passwords import password_problem
from server.auth.tokens import VERIFY, TokenError
from server.db import guests, queries
from server.forwarded import client_address
from server.http import APIError, check_fields, json_response, read_form_or_json, read_json

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

LOGIN_WINDOW_S = 60
SIGNUP_WINDOW_S = 3600
GUEST_WINDOW_S = 3600
# One address may fail this many times more than one email (a NAT hides many users).
ADDRESS_FACTOR = 5


def user_body(user: Any) -> dict[str, Any]:
    return {
        "id": user["id"],
        "email": user["email"],
        "is_active": user["is_active"],
        "is_verified": user["is_verified"],
        "created_at": user["created_at"],
        "is_guest": user["is_guest"],
    }


def login_body(app: web.Application, user: Any) -> dict[str, Any]:
    """A fresh access token for `user` (of its current token generation)."""
    tokens = app[keys.TOKENS]
    token, _ = tokens.issue(user["id"], generation=user["token_generation"])
    return {"access_token": token, "token_type": "bearer", "expires_in": tokens.access_ttl_s}


async def check_rate(
    request: web.Request, window_s: int, keys_limits: list[tuple[str, int]], what: str
) -> None:
    """429 with Retry-After when a key has `limit` hits in its window already."""
    pool = request.app[keys.POOL]
    for key, limit in keys_limits:
        hits, left_s = await queries.hits_in_window(pool, key, window_s)
        if hits >= limit:
            raise too_many(what, left_s)


def too_many(what: str, left_s: float) -> APIError:
    retry = max(1, int(left_s + 0.999))
    return APIError(429, f"too many {what}, try again later", {"Retry-After": str(retry)})


def send_verification(app: web.Application, user_id: int, email: str, base_url: str) -> None:
    """Record a single-use verification link and mail it in the background."""

    async def record_and_send() -> None:
        token, claims = app[keys.TOKENS].issue(user_id, VERIFY)
        await queries.add_verification(
            app[keys.POOL], claims.jti, user_id, datetime.fromtimestamp(claims.expires_at, UTC)
        )
        # A fragment: the token never reaches a log or a Referer on the way to the page.
        link = f"{base_url}/static/verify.html#token={token}"
        await app[keys.MAILER].send(
            email,
            "Confirm your email address",
            "Welcome!\n\nConfirm your email address, and choose your password, on this page:"
            f"\n\n{link}\n\nIf you did not sign up, ignore this message: nobody can use this"
            " address with us until its owner opens the link.\n",
        )

    app[keys.MAILER].run_later(record_and_send(), f"verification email to {email}")


@routes.post("/api/v1/auth/guest")
async def guest(request: web.Request) -> web.Response:
    """A guest: a user without email or password, for a visitor who asks before signing up."""
    app = request.app
    settings = app[keys.SETTINGS]
    if not settings.allow_guests:
        raise APIError(403, "guests are not allowed on this server (ALLOW_GUESTS)")
    if per_hour := settings.guests_per_hour_per_address:
        key = f"guest:addr:{client_address(request)}"
        hits, left_s = await queries.count_hit(app[keys.POOL], key, GUEST_WINDOW_S)
        if hits > per_hour:
            raise too_many("guests from this address", left_s)
    user = await guests.create_guest(app[keys.POOL])
    body = login_body(app, user)
    body["user"] = {"id": user["id"], "is_guest": True}
    return json_response(body, 201)


@routes.post("/api/v1/auth/signup")
async def signup(request: web.Request) -> web.Response:
    """With a guest's token, the guest becomes the account: same id, its history kept."""
    guest = await guest_of(request)
    data = check_fields(await read_json(request), {"email": str, "password": str})
    try:
        address = parse_email(data["email"])
    except EmailError as exc:
        raise APIError(422, f"email: {exc}") from None
    if problem := password_problem(data["password"]):
        raise APIError(422, problem)
    app = request.app
    if per_hour := app[keys.SETTINGS].signups_per_hour_per_address:
        key = f"signup:addr:{client_address(request)}"
        hits, left_s = await queries.count_hit(app[keys.POOL], key, SIGNUP_WINDOW_S)
        if hits > per_hour:
            raise too_many("signups from this address", left_s)
    hashed = await app[keys.HASHER].hash(data["password"])
    if guest is None:
        user = await queries.create_user(app[keys.POOL], address.display, address.key, hashed)
    else:
        try:
            user = await guests.make_account(
                app[keys.POOL], guest["id"], address.display, address.key, hashed
            )
        except asyncpg.UniqueViolationError:
            user = None
        else:
            if user is None:  # it became or joined an account meanwhile
                raise APIError(401, "invalid token", UNAUTHORIZED)
            # Its generation moved on: its sockets close (server.chat.revocation).
    if user is None:
        raise APIError(409, "an account with this email already exists")
    settings = app[keys.SETTINGS]
    # From settings, never from the Host header: the client writes that one.
    send_verification(app, user["id"], user["email"], settings.own_origin)
    body = user_body(user)
    if not settings.require_verified_email:
        body.update(login_body(app, user))
    return json_response(body, 201)


@routes.post("/api/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    """With a guest's token, the guest's conversations move into the account."""
    guest = await guest_of(request)
    kind, raw = await read_form_or_json(request)
    # The OAuth2 form names the email `username`; JSON clients may use either name.
    user_field = (
        "username"
        if kind == "form" or (isinstance(raw, dict) and "email" not in raw and "username" in raw)
        else "email"
    )
    data = check_fields(raw, {user_field: str, "password": str})
    password = data["password"]
    try:
        key: str | None = email_key(data[user_field])
    except EmailError:
        key = None  # no account has it; still hashed below, so it answers as slowly
    app = request.app
    settings = app[keys.SETTINGS]
    limit = settings.login_rate_per_minute
    rate_keys = [
        (f"login:email:{key or data[user_field].strip().lower()}", limit),
        (f"login:addr:{client_address(request)}", limit * ADDRESS_FACTOR),
    ]
    await check_rate(request, LOGIN_WINDOW_S, rate_keys, "failed logins")

    user = await queries.user_by_email(app[keys.POOL], key) if key else None
    hashed = user["hashed_password"] if user else None
    ok = await app[keys.HASHER].verify(password, hashed) and user["is_active"]
    if not ok:
        for key, _ in rate_keys:
            await queries.add_hit(app[keys.POOL], key, LOGIN_WINDOW_S)
        raise APIError(401, "incorrect email or password", UNAUTHORIZED)
    if settings.require_verified_email and not user["is_verified"]:
        raise APIError(403, "verify your email address before logging in")
    await queries.clear_hits(app[keys.POOL], rate_keys[0][0])
    if guest is not None:
        # The guest is gone: its sockets close (server.chat.revocation).
        await guests.merge_guest(app[keys.POOL], guest["id"], user["id"])
    return json_response(login_body(app, user))


async def _use_link(request: web.Request, token: str, password: str | None) -> Any:
    """Verify the account `token` names; its password becomes `password` (None: none)."""
    app = request.app
    try:
        claims = app[keys.TOKENS].verify(token, VERIFY)
    except TokenError as exc:
        raise APIError(400, f"verification link is not valid: {exc}") from None
    hashed = await app[keys.HASHER].hash(password) if password is not None else None
    user = await queries.use_verification(app[keys.POOL], claims.jti, claims.user_id, hashed)
    if user is None:
        raise APIError(400, "verification link is not valid: already used or unknown")
    return user


@routes.get("/api/v1/auth/verify")
async def verify(request: web.Request) -> web.Response:
    """The contract's link: verified; earlier tokens and the password are revoked, and
    the opener gets a token to choose a password with (`POST /api/v1/auth/password`)."""
    user = await _use_link(request, request.query.get("token", ""), None)
    return json_response(
        {
            "detail": "email verified; choose a password to log in with one",
            "user": user_body(user),
            **login_body(request.app, user),
        }
    )


@routes.post("/api/v1/auth/verify")
async def verify_with_password(request: web.Request) -> web.Response:
    """`{"token","password"}`: verified, with the password the opener chose."""
    data = check_fields(await read_json(request), {"token": str, "password": str})
    if problem := password_problem(data["password"]):
        raise APIError(422, problem)
    user = await _use_link(request, data["token"], data["password"])
    return json_response(
        {"detail": "email verified", "user": user_body(user), **login_body(request.app, user)}
    )


@routes.post("/api/v1/auth/password")
async def change_password(request: web.Request) -> web.Response:
    """`{"password","current_password"}` (the current one only when the account has one):
    a new password; every other token of the account stops working."""
    user = await current_user(request)
    data = check_fields(await read_json(request), {"password": str}, {"current_password": str})
    if problem := password_problem(data["password"]):
        raise APIError(422, problem)
    app = request.app
    pool = app[keys.POOL]
    stored = await queries.password_hash(pool, user["id"])
    if stored is not None:
        # Guessing the current password with a stolen token counts as failed logins.
        rate_key = f"login:email:{user['email_key']}"
        limit = app[keys.SETTINGS].login_rate_per_minute
        await check_rate(request, LOGIN_WINDOW_S, [(rate_key, limit)], "failed logins")
        if not await app[keys.HASHER].verify(data.get("current_password", ""), stored):
            await queries.add_hit(pool, rate_key, LOGIN_WINDOW_S)
            raise APIError(403, "current_password: does not match")
    user = await queries.set_password(
        pool, user["id"], await app[keys.HASHER].hash(data["password"])
    )
    return json_response(login_body(app, user))


@routes.get("/api/v1/auth/me")
async def me(request: web.Request) -> web.Response:
    return json_response(user_body(await current_user(request)))


@routes.post("/api/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    user = await current_user(request)
    return json_response(login_body(request.app, user))


@routes.post("/api/v1/auth/identify")
async def identify(request: web.Request) -> web.Response:
    """`{"token"}` signed by the host site (IDENTITY_SECRET): a login body for the user
    bound to its `sub`, made on first use. With a guest's token, the guest joins it."""
    guest = await guest_of(request)
    data = check_fields(await read_json(request), {"token": str})
    app = request.app
    secret = app[keys.SETTINGS].identity_secret
    if not secret:
        raise APIError(401, "host-site identities are off (IDENTITY_SECRET)", UNAUTHORIZED)
    try:
        identity = verify_identity(data["token"], secret)
    except IdentityError as exc:
        raise APIError(401, str(exc), UNAUTHORIZED) from None
    user = await guests.identified_user(app[keys.POOL], identity.sub, identity.email)
    if not user["is_active"]:
        raise APIError(401, "this user is disabled", UNAUTHORIZED)
    if guest is not None:
        # The guest is gone: its sockets close (server.chat.revocation).
        await guests.merge_guest(app[keys.POOL], guest["id"], user["id"])
    return json_response(login_body(app, user))
