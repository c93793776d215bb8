"""Accounts over REST: signup, login, me, refresh, verify."""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import pytest

from server.app import create_app
from tests.accounts import PASSWORD, TEST_SECRET, mailed_link, mailed_token, signup, unique_email


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
        _token({**good, "gen": 1}),  # a generation the account never had
        _token({**good, "gen": "0"}),
        _token({**good, "gen": True}),
        _token({**good, "gen": -1}),
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
    email, token, _ = await signup(client)
    link = await mailed_token(caplog, email)
    resp = await client.get(f"/api/v1/auth/verify?token={link}")
    assert resp.status == 200
    body = await resp.json()
    assert body["user"]["is_verified"] is True
    # Opening the link revoked what the account had: its token, its password.
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status == 401
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 401
    # The opener's token works, and chooses a password (none to confirm: there is none).
    opener = {"Authorization": f"Bearer {body['access_token']}"}
    me = await client.get("/api/v1/auth/me", headers=opener)
    assert (await me.json())["is_verified"] is True
    resp = await client.post(
        "/api/v1/auth/password", json={"password": "chosen by opener"}, headers=opener
    )
    assert resp.status == 200
    login = await client.post(
        "/api/v1/auth/login", json={"email": email, "password": "chosen by opener"}
    )
    assert login.status == 200
    again = await client.get(f"/api/v1/auth/verify?token={link}")
    assert again.status == 400
    assert (await client.get("/api/v1/auth/verify?token=nonsense")).status == 400
    assert (await client.get("/api/v1/auth/verify")).status == 400


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


# -- one normal form of an address (issue 18, item 4) ---------------------------------


async def test_a_dotted_capital_i_neither_squats_nor_is_squatted(client):
    """`İ` lowercases to `i` in PostgreSQL and `i̇` in Python: refused outright."""
    local = unique_email("info").split("@")[0]
    resp = await client.post(
        "/api/v1/auth/signup",
        json={"email": f"İ{local[1:]}@example.com", "password": PASSWORD},
    )
    assert resp.status == 422
    assert (await resp.json())["detail"].startswith("email:")
    await signup(client, f"{local}@example.com")  # the real owner is not told 409


async def test_the_login_lockout_holds_for_every_spelling_of_the_address(client, settings):
    email, _, _ = await signup(client, unique_email("admin"))
    local, domain = email.split("@")
    for _ in range(settings.login_rate_per_minute):
        resp = await client.post("/api/v1/auth/login", json={"email": email, "password": "nope"})
        assert resp.status == 401
    spellings = [
        email,
        email.upper(),
        f"{local}@{domain.upper().replace('EXAMPLE', 'ＥＸＡＭＰＬＥ')}",
        local.replace("i", "İ", 1) + "@" + domain,
    ]
    for spelling in spellings:
        resp = await client.post(
            "/api/v1/auth/login", json={"email": spelling, "password": PASSWORD}
        )
        assert resp.status in (401, 429), (spelling, resp.status)
        assert "access_token" not in await resp.json()
    resp = await client.post(
        "/api/v1/auth/login", json={"email": email.upper(), "password": PASSWORD}
    )
    assert resp.status == 429


async def test_login_takes_any_case_of_the_address(client):
    email, _, _ = await signup(client, unique_email("Case"))
    resp = await client.post(
        "/api/v1/auth/login", json={"email": email.swapcase(), "password": PASSWORD}
    )
    assert resp.status == 200


# -- links come from settings, never from the Host header (issue 18, item 1) ----------


@pytest.mark.parametrize("public_url", [None, "https://chat.example.com"])
async def test_the_mailed_link_ignores_the_host_header(
    aiohttp_client, make_settings, caplog, public_url
):
    caplog.set_level("INFO", logger="server.mail")
    settings = make_settings(public_url=public_url)
    client = await aiohttp_client(create_app(settings))
    email = unique_email()
    resp = await client.post(
        "/api/v1/auth/signup",
        json={"email": email, "password": PASSWORD},
        headers={"Host": "chat.example.com@evil.example"},
    )
    assert resp.status == 201
    link = await mailed_link(caplog, email)
    expected = public_url or f"http://{settings.host}:{settings.port}"
    assert link.startswith(f"{expected}/static/verify.html#token="), link
    assert "evil" not in link


# -- the verification link proves the mailbox, not the password (issue 18, item 2) ----


@pytest.fixture
async def admin_app(aiohttp_client, make_settings):
    owner = unique_email("admin")
    settings = make_settings(admin_emails=frozenset({owner}))
    return await aiohttp_client(create_app(settings)), owner


async def status_of(client, method: str, path: str, token: str, **kwargs) -> int:
    resp = await client.request(
        method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
    )
    return resp.status


@pytest.mark.parametrize("opened_with", ["page", "get"])
async def test_a_squatter_gets_no_admin_access_once_the_owner_opens_the_link(
    admin_app, caplog, opened_with
):
    """The review's chain: sign up first with an admin's address, wait for the owner."""
    caplog.set_level("INFO", logger="server.mail")
    client, owner = admin_app
    squatted = owner.upper()  # another spelling of the same address
    resp = await client.post("/api/v1/auth/signup", json={"email": squatted, "password": PASSWORD})
    assert resp.status == 201
    squatter_token = (await resp.json())["access_token"]
    assert await status_of(client, "GET", "/api/v1/admin/documents", squatter_token) == 403

    link = await mailed_token(caplog, squatted)  # goes to the owner's mailbox
    if opened_with == "page":
        resp = await client.post(
            "/api/v1/auth/verify", json={"token": link, "password": "the owner's own"}
        )
    else:
        resp = await client.get(f"/api/v1/auth/verify?token={link}")
    assert resp.status == 200
    owner_token = (await resp.json())["access_token"]

    for method, path in [
        ("GET", "/api/v1/admin/documents"),
        ("POST", "/api/v1/admin/purge"),
        ("GET", "/api/v1/auth/me"),
        ("POST", "/api/v1/auth/refresh"),
    ]:
        assert await status_of(client, method, path, squatter_token) == 401, path
    login = await client.post("/api/v1/auth/login", json={"email": squatted, "password": PASSWORD})
    assert login.status == 401
    # The squatter cannot set a password either: no token of theirs is valid.
    assert (
        await status_of(
            client, "POST", "/api/v1/auth/password", squatter_token, json={"password": "x" * 12}
        )
        == 401
    )

    assert await status_of(client, "GET", "/api/v1/admin/documents", owner_token) == 200
    if opened_with == "page":
        login = await client.post(
            "/api/v1/auth/login", json={"email": owner, "password": "the owner's own"}
        )
        assert login.status == 200


async def test_verify_with_a_password_bad_input(client, caplog):
    caplog.set_level("INFO", logger="server.mail")
    email, _, _ = await signup(client)
    link = await mailed_token(caplog, email)
    for payload, status in [
        ({"token": link}, 422),
        ({"password": "long enough"}, 422),
        ({"token": link, "password": "short"}, 422),
        ({"token": link, "password": "x" * 73}, 422),
        ({"token": link, "password": 12345678}, 422),
        ({"token": "nonsense", "password": "long enough"}, 400),
        ({"token": link + "x", "password": "long enough"}, 400),
    ]:
        resp = await client.post("/api/v1/auth/verify", json=payload)
        assert resp.status == status, (payload, await resp.text())
        assert "detail" in await resp.json()
    resp = await client.post(
        "/api/v1/auth/verify", data="{", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    ok = await client.post("/api/v1/auth/verify", json={"token": link, "password": "long enough"})
    assert ok.status == 200
    again = await client.post(
        "/api/v1/auth/verify", json={"token": link, "password": "long enough"}
    )
    assert again.status == 400


async def test_changing_the_password_needs_the_current_one_and_revokes_tokens(client, user):
    path, auth = "/api/v1/auth/password", user["headers"]
    for payload in [
        {"password": "a new password"},
        {"password": "a new password", "current_password": "wrong-one"},
    ]:
        resp = await client.post(path, json=payload, headers=auth)
        assert resp.status == 403
        assert "current_password" in (await resp.json())["detail"]
    for payload in [{}, {"password": "short", "current_password": PASSWORD}, {"password": 5}]:
        assert (await client.post(path, json=payload, headers=auth)).status == 422, payload
    assert (await client.post(path, json={"password": "a new password"})).status == 401

    resp = await client.post(
        path, json={"password": "a new password", "current_password": PASSWORD}, headers=auth
    )
    assert resp.status == 200
    fresh = (await resp.json())["access_token"]
    assert (await client.get("/api/v1/auth/me", headers=auth)).status == 401
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {fresh}"})
    ).status == 200
    login = await client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD}
    )
    assert login.status == 401


async def test_guessing_the_current_password_is_rate_limited(client, user, settings):
    path, auth = "/api/v1/auth/password", user["headers"]
    for _ in range(settings.login_rate_per_minute):
        payload = {"password": "a new password", "current_password": "a guess!"}
        assert (await client.post(path, json=payload, headers=auth)).status == 403
    payload = {"password": "a new password", "current_password": PASSWORD}
    resp = await client.post(path, json=payload, headers=auth)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1


# -- signups per client address (issue 18, item 7) -------------------------------------


async def test_signups_per_address_are_limited(aiohttp_client, make_settings):
    settings = make_settings(signups_per_hour_per_address=3, trusted_proxies=1)
    client = await aiohttp_client(create_app(settings))
    address = f"192.0.2.{uuid.uuid4().int % 250 + 1}, 10.{uuid.uuid4().int % 250}.0.1"

    async def attempt(email: str, forwarded: str = address):
        return await client.post(
            "/api/v1/auth/signup",
            json={"email": email, "password": PASSWORD},
            headers={"X-Forwarded-For": forwarded},
        )

    taken = unique_email()
    statuses = [(await attempt(e)).status for e in (unique_email(), taken, taken)]
    assert statuses == [201, 201, 409]  # a refused signup counts too
    late = await attempt(unique_email())
    assert late.status == 429
    assert 1 <= int(late.headers["Retry-After"]) <= 3600
    assert "detail" in await late.json()
    other = await attempt(unique_email(), f"192.0.2.1, 10.{uuid.uuid4().int % 250}.1.1")
    assert other.status == 201


async def test_parallel_signups_cannot_pass_the_limit_together(aiohttp_client, make_settings):
    settings = make_settings(signups_per_hour_per_address=5, trusted_proxies=1)
    client = await aiohttp_client(create_app(settings))
    forwarded = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.2"
    resps = await asyncio.gather(
        *(
            client.post(
                "/api/v1/auth/signup",
                json={"email": unique_email(), "password": PASSWORD},
                headers={"X-Forwarded-For": forwarded},
            )
            for _ in range(20)
        )
    )
    assert sorted(r.status for r in resps) == [201] * 5 + [429] * 15
