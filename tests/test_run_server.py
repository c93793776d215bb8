"""run_server.py's shutdown, with a real process and real signals: the server stays
reachable while it drains, so a load balancer polling /readyz sees the 503."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.accounts import TEST_SECRET
from tests.chat.ws import LONG_KB, LONG_QUESTION, recv_tokens, recv_until_close
from tests.processes import http_signup, message, server_process, ws_to


@dataclass
class Draining:
    server: Any
    session: aiohttp.ClientSession
    token: str
    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict]  # the reply's frames read before the signal


@contextlib.asynccontextmanager
async def draining(
    tmp_path: Path, database_url: str, token_delay_ms: int, tokens: int
) -> AsyncIterator[Draining]:
    """A server process with a long reply under way (its first `tokens` tokens read),
    just sent SIGTERM."""
    env = {
        "KNOWLEDGE_PATH": str(LONG_KB),
        "LLM_TOKEN_DELAY_MS": str(token_delay_ms),
        "SHUTDOWN_TIMEOUT_S": "30",
    }
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, **env) as server,
        aiohttp.ClientSession() as session,
    ):
        token, _ = await http_signup(session, server.url)
        ws, _ = await ws_to(session, server.ws_url, token)
        await ws.send_str(message("drain", LONG_QUESTION))
        frames = await recv_tokens(ws, tokens)
        server.proc.send_signal(signal.SIGTERM)
        yield Draining(server, session, token, ws, frames)


async def _status(url: str) -> tuple[int, dict]:
    """GET `url` on a connection of its own (a poller that just arrived)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
        fresh.get(url) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_sigterm_keeps_listening_while_replies_drain(tmp_path, database_url, db):
    async with draining(tmp_path, database_url, 15, tokens=3) as d:
        server, frames = d.server, d.frames
        # New connections are still accepted; readiness fails as soon as the signal lands.
        deadline = time.monotonic() + 2
        while (status := await _status(server.url + "/readyz"))[0] == 200:
            assert time.monotonic() < deadline, "/readyz still 200 after SIGTERM"
            await asyncio.sleep(0.02)
        assert status == (503, {"status": "shutting down"})
        assert await _status(server.url + "/healthz") == (200, {"status": "ok"})

        # A new WebSocket is refused with a JSON error; the open one keeps its reply.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await d.session.ws_connect(
                server.ws_url, headers={"Authorization": f"Bearer {d.token}"}
            )
        assert refused.value.status == 503
        status, body = await _status(server.url + "/api/v1/chat/ws")
        assert status == 503 and body["detail"]
        assert server.proc.poll() is None

        more, msg = await recv_until_close(d.ws)
        frames += more
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
        end = frames[-1]
        assert end["type"] == "end" and end["finish_reason"] == "stop", frames[-3:]
        assert sum(f["type"] == "token" for f in frames) > 30  # it was well in flight
        stored = await db.fetchrow(
            "SELECT message, finish_reason FROM chat_history WHERE id = $1", end["message_id"]
        )
        assert tuple(stored) == (end["text"], "stop")
        assert await server.stop(sig=None) == 0, server.output()
        with pytest.raises(aiohttp.ClientConnectionError):
            await _status(server.url + "/healthz")


async def test_sigterm_with_nothing_in_flight_stops_at_once(tmp_path, database_url):
    async with server_process(
        tmp_path, database_url, TEST_SECRET, SHUTDOWN_TIMEOUT_S="30"
    ) as server:
        started = time.monotonic()
        assert await server.stop(signal.SIGTERM) == 0, server.output()
        assert time.monotonic() - started < 5, server.output()


async def test_a_second_signal_cuts_the_drain(tmp_path, database_url):
    async with draining(tmp_path, database_url, 200, tokens=1) as d:
        server = d.server
        await asyncio.sleep(0.5)
        assert server.proc.poll() is None  # draining
        started = time.monotonic()
        assert await server.stop(signal.SIGTERM) != 0
        assert time.monotonic() - started < 5, server.output()
