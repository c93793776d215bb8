"""Sockets of deactivated, deleted or revoked users close with 4401 (issue 18, items 2, 6)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiohttp
import pytest

from server.app import create_app
from server.chat.revocation import still_valid, to_close
from tests.accounts import TEST_SECRET, mailed_token, signup
from tests.chat.ws import connect, recv, recv_until_close
from tests.processes import server_process

WITHIN_S = 8.0  # "within a few seconds": the recheck runs every 2 s


def test_which_sockets_no_longer_stand():
    users = {
        1: {"is_active": True, "token_generation": 0},
        2: {"is_active": False, "token_generation": 0},
        3: {"is_active": True, "token_generation": 1},
    }
    conns = [
        SimpleNamespace(user_id=u, generation=g)
        for u, g in [(1, 0), (2, 0), (3, 0), (3, 1), (4, 0)]
    ]
    assert [(c.user_id, c.generation) for c in to_close(conns, users)] == [(2, 0), (3, 0), (4, 0)]
    assert still_valid(users[1], 0) and not still_valid(None, 0)


async def closed_with_4401(ws) -> tuple[list[dict], float]:
    started = time.monotonic()
    frames, close = await recv_until_close(ws, timeout=WITHIN_S + 5)
    assert close.type == aiohttp.WSMsgType.CLOSE, close
    assert close.data == 4401, close
    assert frames and frames[-1]["type"] == "error" and frames[-1]["code"] == "unauthorized"
    return frames, time.monotonic() - started


@pytest.mark.parametrize(
    "change",
    ["UPDATE users SET is_active = false WHERE id = $1", "DELETE FROM users WHERE id = $1"],
    ids=["deactivated", "deleted"],
)
async def test_an_open_socket_closes_when_its_user_goes(client, db, change):
    _, token, user_id = await signup(client)
    ws = await connect(client, token)
    await db.execute(change, user_id)
    _, took = await closed_with_4401(ws)
    assert took < WITHIN_S
    # And the same token opens nothing any more.
    again = await client.ws_connect("/api/v1/chat/ws")
    await again.send_json({"type": "auth", "token": token})
    _, close = await recv_until_close(again)
    assert close.data == 4401


async def test_an_auth_frame_rechecks_the_user_at_once(aiohttp_client, make_settings, db):
    # The periodic recheck far away: only the `auth` frame can notice.
    client = await aiohttp_client(create_app(make_settings(session_recheck_s=3600.0)))
    _, token, user_id = await signup(client)
    ws = await connect(client, token)
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", user_id)
    await ws.send_json({"type": "auth", "token": token})
    _, took = await closed_with_4401(ws)
    assert took < 2.0


async def test_the_squatter_s_socket_closes_when_the_owner_opens_the_link(client, db, caplog):
    caplog.set_level("INFO", logger="server.mail")
    email, token, _ = await signup(client)
    ws = await connect(client, token)
    link = await mailed_token(caplog, email)
    resp = await client.post("/api/v1/auth/verify", json={"token": link, "password": "owner's own"})
    assert resp.status == 200
    await closed_with_4401(ws)
    # The old token's handshake is closed with 4401 before `ready`.
    again = await client.ws_connect("/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"})
    frames, close = await recv_until_close(again)
    assert close.data == 4401 and all(f["type"] != "ready" for f in frames)
    # The owner's new token works.
    fresh = await connect(client, (await resp.json())["access_token"])
    await fresh.send_json({"type": "ping"})
    assert (await recv(fresh))["type"] == "pong"
    await fresh.close()


async def test_every_instance_closes_the_user_s_sockets(tmp_path, database_url, db):
    async with (
        server_process(tmp_path, database_url, TEST_SECRET) as a,
        server_process(tmp_path, database_url, TEST_SECRET) as b,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(
            a.url + "/api/v1/auth/signup",
            json={"email": f"gone-{time.time_ns()}@example.com", "password": "long enough"},
        ) as resp:
            body = await resp.json()
        sockets = []
        for server in (a, b, b):
            ws = await session.ws_connect(
                server.ws_url, headers={"Authorization": f"Bearer {body['access_token']}"}
            )
            assert (await recv(ws))["type"] == "ready"
            sockets.append(ws)
        await db.execute("UPDATE users SET is_active = false WHERE id = $1", body["id"])
        results = await asyncio.gather(*(closed_with_4401(ws) for ws in sockets))
        assert all(took < WITHIN_S for _, took in results), results
