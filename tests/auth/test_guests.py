"""Guests: a visitor chats before signing up, signs up or logs in keeping the chat, and
reaches nothing of anyone else. Real server, real database, real sockets."""

from __future__ import annotations

import time

import orjson
import pytest
from aiohttp import WSMsgType

from server.app import create_app
from server.auth.tokens import TokenIssuer
from server.db import purge as purge_sql
from tests.accounts import PASSWORD, TEST_SECRET, signup, unique_email
from tests.chat.ws import connect, recv, recv_until


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def guests(aiohttp_client, make_settings):
    # No limit per address: every test's guests come from 127.0.0.1 within the hour.
    return await aiohttp_client(
        create_app(make_settings(allow_guests=True, guests_per_hour_per_address=0))
    )


async def new_guest(client) -> dict:
    resp = await client.post("/api/v1/auth/guest")
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def ask(client, token, text, **extra):
    resp = await client.post(
        "/api/v1/chat/chat", json={"message": text, **extra}, headers=auth(token)
    )
    return resp.status, await resp.json()


async def closed_with(ws, within_s: float = 10.0) -> int:
    """The close code, past the `error` frame before it (server.chat.revocation rechecks
    every socket's user every 2 s)."""
    while True:
        msg = await ws.receive(timeout=within_s)
        if msg.type != WSMsgType.TEXT:
            assert msg.type == WSMsgType.CLOSE, msg
            return msg.data


async def status_of(client, method, path, token, **kwargs) -> int:
    resp = await getattr(client, method)(path, headers=auth(token), **kwargs)
    return resp.status


async def test_guests_are_off_by_default(client):
    resp = await client.post("/api/v1/auth/guest")
    assert resp.status == 403 and "detail" in await resp.json()


async def test_a_guest_chats_at_once(guests):
    body = await new_guest(guests)
    assert set(body) == {"access_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    assert body["user"]["is_guest"] is True and isinstance(body["user"]["id"], int)
    token = body["access_token"]
    resp = await guests.get("/api/v1/auth/me", headers=auth(token))
    me = await resp.json()
    assert me["id"] == body["user"]["id"] and me["email"] is None and me["is_guest"] is True
    status, answer = await ask(guests, token, "How do I embed the widget?")
    assert status == 200 and answer["conversation_id"]
    resp = await guests.get("/api/v1/chat/conversations", headers=auth(token))
    assert [c["id"] for c in await resp.json()] == [answer["conversation_id"]]
    resp = await guests.post("/api/v1/auth/refresh", headers=auth(token))
    assert resp.status == 200
    ws = await guests.ws_connect("/api/v1/chat/ws", headers=auth(token))
    ready = await recv(ws)
    assert ready["user"] == {"id": me["id"], "email": None, "is_guest": True}
    await ws.send_str(orjson.dumps({"type": "message", "id": "g1", "text": "hi"}).decode())
    frames = await recv_until(ws, "end", "g1")
    assert frames[0]["type"] == "ack" and frames[0]["conversation_id"] == answer["conversation_id"]
    await ws.close()


async def test_accounts_are_no_guests(client, user):
    resp = await client.get("/api/v1/auth/me", headers=user["headers"])
    assert (await resp.json())["is_guest"] is False


async def test_guests_per_address_are_limited(aiohttp_client, make_settings, db):
    await db.execute("DELETE FROM rate_limits WHERE key LIKE 'guest:addr:%'")
    client = await aiohttp_client(
        create_app(make_settings(allow_guests=True, guests_per_hour_per_address=2))
    )
    await new_guest(client)
    await new_guest(client)
    resp = await client.post("/api/v1/auth/guest")
    assert resp.status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 3600
    assert "detail" in await resp.json()


async def test_zero_guests_per_address_is_no_limit(aiohttp_client, make_settings):
    client = await aiohttp_client(
        create_app(make_settings(allow_guests=True, guests_per_hour_per_address=0))
    )
    for _ in range(25):
        await new_guest(client)


async def test_signup_with_a_guest_token_keeps_the_user_and_history(guests):
    guest = await new_guest(guests)
    old = guest["access_token"]
    _, answer = await ask(guests, old, "What is the refund policy?")
    ws = await connect(guests, old)
    email = unique_email()
    resp = await guests.post(
        "/api/v1/auth/signup", json={"email": email, "password": PASSWORD}, headers=auth(old)
    )
    assert resp.status == 201, await resp.text()
    account = await resp.json()
    assert account["id"] == guest["user"]["id"] and account["is_guest"] is False
    assert account["email"] == email
    # The guest's open socket is closed, its token refused everywhere.
    assert await closed_with(ws) == 4401
    assert await status_of(guests, "get", "/api/v1/auth/me", old) == 401
    assert await status_of(guests, "get", "/api/v1/chat/chat-history", old) == 401
    resp = await guests.ws_connect("/api/v1/chat/ws", headers=auth(old))
    assert (await recv(resp))["code"] == "unauthorized"
    # The account has the guest's conversation and history.
    new = account["access_token"]
    resp = await guests.get("/api/v1/chat/chat-history", headers=auth(new))
    items = await resp.json()
    assert next(i["message"] for i in items) == "What is the refund policy?"
    assert items[0]["conversation_id"] == answer["conversation_id"]
    # And it logs in with the password like any account.
    resp = await guests.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status == 200


async def test_signup_with_a_guest_token_and_a_taken_email_is_409(guests):
    email, _, _ = await signup(guests)
    guest = await new_guest(guests)
    resp = await guests.post(
        "/api/v1/auth/signup",
        json={"email": email, "password": PASSWORD},
        headers=auth(guest["access_token"]),
    )
    assert resp.status == 409
    assert await status_of(guests, "get", "/api/v1/auth/me", guest["access_token"]) == 200


async def test_login_with_a_guest_token_moves_its_conversations(guests, db):
    email, account_token, account_id = await signup(guests)
    await ask(guests, account_token, "the account's own question")
    guest = await new_guest(guests)
    old = guest["access_token"]
    _, answer = await ask(guests, old, "asked as a guest")
    ws = await connect(guests, old)
    resp = await guests.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, headers=auth(old)
    )
    assert resp.status == 200
    token = (await resp.json())["access_token"]
    assert await closed_with(ws) == 4401
    assert await status_of(guests, "get", "/api/v1/auth/me", old) == 401
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", guest["user"]["id"]) == 0
    resp = await guests.get("/api/v1/chat/conversations", headers=auth(token))
    conversations = await resp.json()
    assert answer["conversation_id"] in [c["id"] for c in conversations]
    assert len(conversations) == 2
    resp = await guests.get(
        f"/api/v1/chat/chat-history?conversation_id={answer['conversation_id']}",
        headers=auth(token),
    )
    assert next(i["message"] for i in await resp.json()) == "asked as a guest"
    owner = await db.fetchval(
        "SELECT user_id FROM conversations WHERE id = $1", answer["conversation_id"]
    )
    assert owner == account_id


async def test_an_accounts_token_on_signup_and_login_is_ignored(guests):
    _email, token, user_id = await signup(guests)
    other = unique_email()
    resp = await guests.post(
        "/api/v1/auth/signup", json={"email": other, "password": PASSWORD}, headers=auth(token)
    )
    assert resp.status == 201 and (await resp.json())["id"] != user_id
    resp = await guests.post(
        "/api/v1/auth/login", json={"email": other, "password": PASSWORD}, headers=auth(token)
    )
    assert resp.status == 200
    assert await status_of(guests, "get", "/api/v1/auth/me", token) == 200


@pytest.mark.parametrize("path", ["/api/v1/auth/signup", "/api/v1/auth/login"])
async def test_a_bad_or_expired_token_on_signup_and_login_is_401(guests, path):
    body = {"email": unique_email(), "password": PASSWORD}
    resp = await guests.post(path, json=body, headers=auth("not-a-token"))
    assert resp.status == 401
    guest = await new_guest(guests)
    expired = TokenIssuer(TEST_SECRET, "HS256", 60, clock=lambda: time.time() - 3600)
    token, _ = expired.issue(guest["user"]["id"])
    resp = await guests.post(path, json=body, headers=auth(token))
    assert resp.status == 401


async def test_a_guest_reaches_nothing_of_another_user(guests):
    _, victim, _ = await signup(guests)
    _, answer = await ask(guests, victim, "a private question", id="secret-1")
    cid, reply_id = answer["conversation_id"], answer["reply_id"]
    guest = (await new_guest(guests))["access_token"]
    assert (
        await status_of(guests, "get", f"/api/v1/chat/chat-history?conversation_id={cid}", guest)
        == 404
    )
    assert (
        await status_of(
            guests, "patch", f"/api/v1/chat/conversations/{cid}", guest, json={"title": "x"}
        )
        == 404
    )
    assert await status_of(guests, "delete", f"/api/v1/chat/conversations/{cid}", guest) == 404
    assert (
        await status_of(
            guests, "put", f"/api/v1/chat/feedback/{reply_id}", guest, json={"rating": "down"}
        )
        == 404
    )
    status, _ = await ask(guests, guest, "let me in", conversation_id=cid)
    assert status == 404
    # Its own history and conversations hold nothing of the victim's.
    resp = await guests.get("/api/v1/chat/chat-history", headers=auth(guest))
    assert await resp.json() == []
    resp = await guests.delete("/api/v1/chat/chat-history", headers=auth(guest))
    assert await resp.json() == {"deleted": 0}
    # resume and cancel by the victim's message id find nothing.
    ws = await connect(guests, guest)
    await ws.send_str(orjson.dumps({"type": "resume", "id": "secret-1", "after_seq": -1}).decode())
    assert (await recv(ws))["code"] == "unknown_message"
    await ws.send_str(orjson.dumps({"type": "cancel", "id": "secret-1"}).decode())
    assert (await recv(ws))["code"] == "unknown_message"
    await ws.close()
    resp = await guests.get("/api/v1/chat/chat-history", headers=auth(victim))
    assert len(await resp.json()) == 2


async def test_the_purge_removes_idle_guests_with_everything(guests, db):
    idle = await new_guest(guests)
    active = await new_guest(guests)
    await ask(guests, idle["access_token"], "an old question")
    await ask(guests, active["access_token"], "a recent question")
    _, account, account_id = await signup(guests)
    # The idle guest and its rows are a year old; the account's and the other's are new.
    await db.execute(
        "UPDATE users SET created_at = now() - interval '1 year' WHERE id = ANY($1)",
        [idle["user"]["id"], active["user"]["id"], account_id],
    )
    await db.execute(
        "UPDATE chat_history SET \"timestamp\" = now() - interval '1 year' WHERE user_id = $1",
        idle["user"]["id"],
    )
    cutoff = await db.fetchval("SELECT now() - interval '30 days'")
    assert await purge_sql.delete_other(db, cutoff, 1) >= 1
    ids = {r["id"] for r in await db.fetch("SELECT id FROM users")}
    assert idle["user"]["id"] not in ids
    assert {active["user"]["id"], account_id} <= ids
    for table in ("chat_history", "conversations"):
        assert not await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE user_id = $1", idle["user"]["id"]
        )
    assert await status_of(guests, "get", "/api/v1/auth/me", idle["access_token"]) == 401
    assert await status_of(guests, "get", "/api/v1/auth/me", account) == 200
