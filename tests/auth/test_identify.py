"""Visitors the host site already knows: POST /api/v1/auth/identify with a JWT the host's
backend signs with IDENTITY_SECRET. Forged, expired, unsigned, wrong-key and too-far
tokens are refused; the same `sub` is always the same user; an `email` claim joins
nothing and unlocks nothing."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest

from server.app import create_app
from server.auth.identity import IdentityError, verify_identity
from tests.accounts import PASSWORD, signup, unique_email

SECRET = "host-site-identity-secret-" + "0123456789abcdef" * 3  # 74 bytes: fine for HS512 too
IDENTIFY = "/api/v1/auth/identify"


def host_token(secret: str = SECRET, algorithm: str = "HS256", **claims) -> str:
    """What the host site's backend does (README: a few lines of PyJWT)."""
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(**claims) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.fixture
async def site(aiohttp_client, make_settings):
    return await aiohttp_client(
        create_app(
            make_settings(
                identity_secret=SECRET,
                allow_guests=True,
                guests_per_hour_per_address=0,
                admin_emails=frozenset({"boss@example.com"}),
            )
        )
    )


async def identify(client, token: str, headers=None):
    resp = await client.post(IDENTIFY, json={"token": token}, headers=headers or {})
    return resp.status, await resp.json()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_same_sub_is_always_the_same_user(site):
    sub = f"customer-{time.time_ns()}"
    status, body = await identify(site, host_token(sub=sub, email="ann@example.com", name="Ann"))
    assert status == 200 and set(body) == {"access_token", "token_type", "expires_in"}
    resp = await site.get("/api/v1/auth/me", headers=auth(body["access_token"]))
    me = await resp.json()
    assert me["is_guest"] is False and me["is_verified"] is False
    assert me["email"] == "ann@example.com"
    resp = await site.post(
        "/api/v1/chat/chat", json={"message": "hello"}, headers=auth(body["access_token"])
    )
    assert resp.status == 200
    status, again = await identify(site, host_token(sub=sub))
    resp = await site.get("/api/v1/auth/me", headers=auth(again["access_token"]))
    assert (await resp.json())["id"] == me["id"]
    resp = await site.get("/api/v1/chat/chat-history", headers=auth(again["access_token"]))
    assert len(await resp.json()) == 2
    status, other = await identify(site, host_token(sub=sub + "-2"))
    resp = await site.get("/api/v1/auth/me", headers=auth(other["access_token"]))
    assert (await resp.json())["id"] != me["id"]


async def test_an_email_claim_joins_no_password_account_and_makes_no_admin(site, db):
    email, _token, account_id = await signup(site)
    status, body = await identify(site, host_token(sub=f"s-{time.time_ns()}", email=email))
    assert status == 200
    resp = await site.get("/api/v1/auth/me", headers=auth(body["access_token"]))
    assert (await resp.json())["id"] != account_id
    # The account is untouched: it logs in, its history is its own.
    resp = await site.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status == 200
    # An email claim blocks no later signup either.
    fresh = unique_email()
    await identify(site, host_token(sub=f"s-{time.time_ns()}", email=fresh))
    resp = await site.post("/api/v1/auth/signup", json={"email": fresh, "password": PASSWORD})
    assert resp.status == 201
    # Claiming an admin's address makes nobody an admin, even once "verified" elsewhere.
    status, boss = await identify(site, host_token(sub="boss", email="boss@example.com"))
    resp = await site.get("/api/v1/admin/purge", headers=auth(boss["access_token"]))
    assert resp.status == 403


async def test_a_guests_conversations_carry_over(site):
    resp = await site.post("/api/v1/auth/guest")
    guest = (await resp.json())["access_token"]
    resp = await site.post(
        "/api/v1/chat/chat", json={"message": "asked anonymously"}, headers=auth(guest)
    )
    conversation = (await resp.json())["conversation_id"]
    status, body = await identify(site, host_token(sub=f"g-{time.time_ns()}"), auth(guest))
    assert status == 200
    resp = await site.get("/api/v1/chat/conversations", headers=auth(body["access_token"]))
    assert [c["id"] for c in await resp.json()] == [conversation]
    resp = await site.get("/api/v1/auth/me", headers=auth(guest))
    assert resp.status == 401


def bad_tokens() -> list:
    """Each made when its test runs (`now` then): a token made at collection time would
    drift towards the bounds it tests during a long run."""

    def now() -> int:
        return int(time.time())

    return [
        pytest.param(
            lambda: host_token(secret="another-secret-" + "f" * 64, sub="x"), id="wrong key"
        ),
        pytest.param(lambda: host_token(sub="x")[:-4] + "AAAA", id="forged signature"),
        pytest.param(lambda: unsigned(sub="x", exp=now() + 600), id="alg none"),
        pytest.param(lambda: host_token(algorithm="HS512", sub="x"), id="HS512"),
        pytest.param(lambda: host_token(algorithm="HS384", sub="x"), id="HS384"),
        pytest.param(lambda: host_token(sub="x", exp=now() - 10), id="expired"),
        pytest.param(
            lambda: host_token(sub="x", exp=now() + 24 * 3600 + 120), id="exp over 24 h ahead"
        ),
        pytest.param(lambda: jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"), id="no exp"),
        pytest.param(lambda: host_token(sub=""), id="empty sub"),
        pytest.param(lambda: host_token(), id="no sub"),
        pytest.param(lambda: host_token(sub="x" * 201), id="sub over 200"),
        pytest.param(lambda: host_token(sub=42), id="sub not a string"),
        pytest.param(lambda: host_token(sub="x", exp="tomorrow"), id="exp not a number"),
        pytest.param(lambda: host_token(sub="x", email=["a@b.c"]), id="email not a string"),
        pytest.param(lambda: "not.a.jwt", id="garbage"),
        pytest.param(lambda: "", id="empty"),
    ]


@pytest.mark.parametrize("make_token", bad_tokens())
async def test_bad_host_tokens_are_401(site, make_token):
    status, body = await identify(site, make_token())
    assert status == 401 and "detail" in body


async def test_a_sub_of_200_characters_is_fine(site):
    status, _ = await identify(site, host_token(sub="é" * 200))
    assert status == 200


async def test_identify_is_off_without_a_secret(client):
    status, _ = await identify(client, host_token(sub="x"))
    assert status == 401


@pytest.mark.parametrize("body", [{}, {"token": None}, {"token": 5}, {"tok": "x"}])
async def test_a_body_without_a_token_is_422(site, body):
    resp = await site.post(IDENTIFY, json=body)
    assert resp.status == 422


async def test_a_bad_bearer_on_identify_is_401_and_an_accounts_is_ignored(site):
    status, _ = await identify(site, host_token(sub="y"), auth("not-a-token"))
    assert status == 401
    _, token, account_id = await signup(site)
    status, _body = await identify(site, host_token(sub=f"z-{time.time_ns()}"), auth(token))
    assert status == 200
    resp = await site.get("/api/v1/auth/me", headers=auth(token))
    assert resp.status == 200 and (await resp.json())["id"] == account_id


def test_verify_identity_bounds_exp_by_the_clock():
    now = 1_900_000_000
    token = jwt.encode({"sub": "a", "exp": now + 24 * 3600}, SECRET, algorithm="HS256")
    assert verify_identity(token, SECRET, now=now).sub == "a"
    with pytest.raises(IdentityError):
        verify_identity(token, SECRET, now=now - 1)
    with pytest.raises(IdentityError):
        verify_identity(token, SECRET, now=now + 24 * 3600)
