"""Accounts over REST: signup, login, me, refresh, verify."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from tests.conftest import PASSWORD, TEST_SECRET, signup, unique_email


async def test_signup_returns_user_and_token(client):
    email = unique_email()
    resp = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert resp.status == 201
    body = await resp.json()
    assert body["email"] == email
    assert body["is_active"] is True and body["is_verified"] is False
    assert isinstance(body["id"], int) and body["created_at"].endswith("Z")
    assert body["token_type"] == "bearer" and body["access_token"]
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status == 200
    assert (await me.json())["id"] == body["id"]


async def test_signup_duplicate_email_case_insensitive(client):
    email = unique_email()
    await signup(client, email)
    resp = await client.post(
        "/api/v1/auth/signup", json={"email": email.upper(), "password": PASSWORD}
    )
    assert resp.status == 409
    assert "detail" in await resp.json()


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": unique_email(), "password": "short"},
        {"email": unique_email(), "password": "x" * 73},
        {"email": unique_email(), "password": "é" * 37},  # 74 UTF-8 bytes
        {"email": unique_email(), "password": "pass\x00word123"},
        {"email": "a\x00b@example.com", "password": PASSWORD},
        {"email": unique_email()},
        {"password": PASSWORD},
        {"email": 5, "password": PASSWORD},
        {"email": unique_email(), "password": True},
    ],
)
async def test_signup_bad_input_is_422(client, payload):
    resp = await client.post("/api/v1/auth/signup", json=payload)
    assert resp.status == 422, await resp.text()
    assert "detail" in await resp.json()


async def test_password_of_exactly_72_bytes_is_accepted(client):
    resp = await client.post(
        "/api/v1/auth/signup", json={"email": unique_email(), "password": "é" * 36}
    )
    assert resp.status == 201


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ("{not json", {"Content-Type": "application/json"}, 400),
        ("[1, 2]", {"Content-Type": "application/json"}, 422),
        ("email=a", {"Content-Type": "text/plain"}, 415),
    ],
)
async def test_signup_malformed_bodies(client, body, headers, status):
    resp = await client.post("/api/v1/auth/signup", data=body, headers=headers)
    assert resp.status == status
    assert "detail" in await resp.json()


async def test_oversized_body_is_413_json(client):
    resp = await client.post(
        "/api/v1/auth/signup",
        data=b'{"email": "' + b"a" * 70_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert "detail" in await resp.json()


async def test_login_json_and_form(client):
    email, _, _ = await signup(client)
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status == 200
    body = await resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 30 * 60
    resp = await client.post("/api/v1/auth/login", data={"username": email, "password": PASSWORD})
    assert resp.status == 200


async def test_login_unknown_and_wrong_password_look_the_same(client):
    email, _, _ = await signup(client)
    wrong = await client.post("/api/v1/auth/login", json={"email": email, "password": "nope-nope"})
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": unique_email(), "password": "nope-nope"}
    )
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json()


async def test_login_rate_limited_after_repeated_failures(client, settings):
    email, _, _ = await signup(client)
    for _ in range(settings.login_rate_per_minute):
        resp = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": "wrong-pw"}
        )
        assert resp.status == 401
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert "detail" in await resp.json()


def _token(claims: dict, key: str = TEST_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


async def test_bad_tokens_are_401(client, user):
    now = int(time.time())
    sub = str(user["id"])
    good = {"sub": sub, "iat": now, "exp": now + 60, "jti": "x", "typ": "access"}
    bad_tokens = [
        "garbage",
        _token({**good, "exp": now - 1}),
        _token(good, key="another-secret-key-that-is-long-enough-for-every-hmac-0123456789"),
        _token({k: v for k, v in good.items() if k != "exp"}),
        _token({k: v for k, v in good.items() if k != "jti"}),
        _token(good, alg="HS512"),
        jwt.encode(good, None, algorithm="none"),
        _token({**good, "typ": "verify"}),
        user["token"][:-2] + ("AA" if not user["token"].endswith("AA") else "BB"),
    ]
    for token in bad_tokens:
        resp = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401, token
        assert "detail" in await resp.json()
    assert (await client.get("/api/v1/auth/me")).status == 401
    resp = await client.get("/api/v1/auth/me", headers={"Authorization": "Basic abc"})
    assert resp.status == 401


async def test_refresh_gives_a_new_token(client, user):
    resp = await client.post("/api/v1/auth/refresh", headers=user["headers"])
    assert resp.status == 200
    body = await resp.json()
    assert body["access_token"] != user["token"]
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status == 200


async def test_verification_link_verifies_once(client, caplog):
    caplog.set_level("INFO", logger="server.mail")
    _email, token, _ = await signup(client)
    for _ in range(100):
        if "api/v1/auth/verify?token=" in caplog.text:
            break
        await asyncio.sleep(0.02)
    link = caplog.text.split("/api/v1/auth/verify?token=")[1].split()[0]
    resp = await client.get(f"/api/v1/auth/verify?token={link}")
    assert resp.status == 200
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert (await me.json())["is_verified"] is True
    again = await client.get(f"/api/v1/auth/verify?token={link}")
    assert again.status == 400
    assert (await client.get("/api/v1/auth/verify?token=nonsense")).status == 400


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"email": "a@example.com"}}, 422),
        ({"json": {"password": PASSWORD}}, 422),
        ({"json": {"email": 1, "password": PASSWORD}}, 422),
        ({"json": {"email": "a@example.com", "password": ["x"]}}, 422),
        ({"json": {"email": "a\x00@example.com", "password": PASSWORD}}, 422),
        ({"json": {"email": "a@example.com", "password": "pass\x00word"}}, 422),
        ({"json": "just a string"}, 422),
        ({"data": {"password": PASSWORD}}, 422),
        ({"data": "{broken", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": "x", "headers": {"Content-Type": "text/plain"}}, 415),
        # aiohttp's form parser raises on these; they are the client's mistake, not a 500.
        ({"data": "username=&password=", "headers": {"Content-Type": "multipart/form-data"}}, 400),
        (
            {
                "data": b"--b\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            400,
        ),
    ],
)
async def test_login_bad_input(client, kwargs, status):
    resp = await client.post("/api/v1/auth/login", **kwargs)
    assert resp.status == status, await resp.text()
    assert "detail" in await resp.json()


async def test_me_for_a_deleted_user_is_401(client, user, db):
    await db.execute("DELETE FROM users WHERE id = $1", user["id"])
    resp = await client.get("/api/v1/auth/me", headers=user["headers"])
    assert resp.status == 401
