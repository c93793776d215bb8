"""server/chat/pending_auth.py: sockets waiting for `auth`, bounded (issue 18, item 7)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from server.app import create_app
from server.chat.pending_auth import PendingAuth
from tests.accounts import signup
from tests.chat.ws import recv


def test_bounds_per_address_and_in_all():
    pending = PendingAuth(per_address=2, total=3)
    assert pending.admit("a") and pending.admit("a")
    assert not pending.admit("a")
    assert pending.admit("b")
    assert not pending.admit("c")  # three in all
    pending.release("a")
    assert pending.admit("c") and len(pending) == 3
    for address in ("a", "b", "c"):
        pending.release(address)
    assert len(pending) == 0


def test_zero_means_no_bound():
    pending = PendingAuth(per_address=0, total=0)
    assert all(pending.admit("a") for _ in range(1000))


@pytest.fixture
async def bounded(aiohttp_client, make_settings):
    settings = make_settings(ws_pending_auth_per_address=2, ws_pending_auth_max=0)
    return await aiohttp_client(create_app(settings))


async def test_a_third_socket_waiting_for_auth_is_refused(bounded):
    client = bounded
    _, token, _ = await signup(client)
    waiting = [await client.ws_connect("/api/v1/chat/ws") for _ in range(2)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/api/v1/chat/ws")
    assert refused.value.status == 429
    assert int(refused.value.headers["Retry-After"]) >= 1
    # A header-authenticated socket waits for nothing: not counted, not refused.
    header = await client.ws_connect(
        "/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"}
    )
    assert (await recv(header))["type"] == "ready"

    # One authenticates: its place is free again.
    await waiting[0].send_json({"type": "auth", "token": token})
    assert (await recv(waiting[0]))["type"] == "ready"
    third = await client.ws_connect("/api/v1/chat/ws")
    # One that gives up (closes) frees its place too.
    await waiting[1].close()
    for _ in range(50):
        try:
            fourth = await client.ws_connect("/api/v1/chat/ws")
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.02)
    else:
        raise AssertionError("a closed waiting socket kept its place")
    for ws in (waiting[0], header, third, fourth):
        await ws.close()


async def test_a_bad_auth_frame_frees_the_place(bounded):
    client = bounded
    for _ in range(5):  # more than the bound, one after the other
        ws = await client.ws_connect("/api/v1/chat/ws")
        await ws.send_json({"type": "auth", "token": "nonsense"})
        assert (await recv(ws))["code"] == "unauthorized"
        await ws.close()
