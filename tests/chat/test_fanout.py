"""Every tab sees the conversation, on one process and across two processes."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import orjson

from protocol.client import ChatClient
from tests.accounts import PASSWORD, TEST_SECRET, unique_email
from tests.chat.ws import recv, recv_tokens, recv_until, recv_until_close
from tests.processes import server_process


async def _signup(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(
        url + "/api/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD}
    ) as resp:
        assert resp.status == 201
        return (await resp.json())["access_token"]


async def _ws(session, server, token):
    ws = await session.ws_connect(server.ws_url, headers={"Authorization": f"Bearer {token}"})
    assert (await recv(ws))["type"] == "ready"
    return ws


async def test_two_processes_share_the_conversation(tmp_path, database_url, fanout_url):
    env = {"LLM_TOKEN_DELAY_MS": "5", "FANOUT_URL": fanout_url or ""}
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, **env) as a,
        server_process(tmp_path, database_url, TEST_SECRET, **env) as b,
        aiohttp.ClientSession() as session,
    ):
        token = await _signup(session, a.url)
        tab_a = await _ws(session, a, token)
        tab_b = await _ws(session, b, token)
        await asyncio.sleep(0.2)
        await tab_a.send_str(
            orjson.dumps(
                {"type": "message", "id": "x1", "text": "How do I embed the widget?"}
            ).decode()
        )
        frames_a = await recv_until(tab_a, "end", "x1")
        frames_b = await recv_until(tab_b, "end", "x1")
        assert frames_a[0]["type"] == "ack"
        assert frames_b[0]["type"] == "message"
        assert frames_b[0]["message_id"] == frames_a[0]["message_id"]
        assert frames_b[1:] == frames_a[1:]

        # resume on the other instance, after the end
        await tab_b.send_str(orjson.dumps({"type": "resume", "id": "x1", "after_seq": 2}).decode())
        replay = await recv_until(tab_b, "end", "x1")
        assert next(f["seq"] for f in replay if f["type"] == "token") == 3
        assert replay[-1] == frames_a[-1]


async def test_conversations_reach_the_tabs_on_another_instance(tmp_path, database_url, fanout_url):
    env = {"FANOUT_URL": fanout_url or ""}
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, **env) as a,
        server_process(tmp_path, database_url, TEST_SECRET, **env) as b,
        aiohttp.ClientSession() as session,
    ):
        token = await _signup(session, a.url)
        headers = {"Authorization": f"Bearer {token}"}
        tab_b = await _ws(session, b, token)
        await asyncio.sleep(1.5)  # both instances see each other (peers are polled each second)
        async with session.post(
            a.url + "/api/v1/chat/conversations", json={"title": "on a"}, headers=headers
        ) as resp:
            made = await resp.json()
        assert await recv(tab_b) == {
            "type": "conversation",
            "event": "created",
            "id": made["id"],
            "title": "on a",
        }
        tab_a = await _ws(session, a, token)
        await tab_a.send_str(
            orjson.dumps(
                {"type": "message", "id": "c1", "text": "hello", "conversation_id": made["id"]}
            ).decode()
        )
        echo = (await recv_until(tab_b, "message", "c1"))[-1]
        assert echo["conversation_id"] == made["id"]
        await recv_until(tab_b, "end", "c1")
        async with session.patch(
            a.url + f"/api/v1/chat/conversations/{made['id']}",
            json={"title": "renamed on a"},
            headers=headers,
        ) as resp:
            assert resp.status == 200
        assert await recv(tab_b) == {
            "type": "conversation",
            "event": "renamed",
            "id": made["id"],
            "title": "renamed on a",
        }


async def test_resume_and_cancel_on_another_instance_mid_reply(tmp_path, database_url, fanout_url):
    env = {"LLM_TOKEN_DELAY_MS": "40", "FANOUT_URL": fanout_url or ""}
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, **env) as a,
        server_process(tmp_path, database_url, TEST_SECRET, **env) as b,
        aiohttp.ClientSession() as session,
    ):
        token = await _signup(session, a.url)
        tab_a = await _ws(session, a, token)
        await tab_a.send_str(
            orjson.dumps(
                {
                    "type": "message",
                    "id": "long",
                    "text": "What settings are there for the purge schedule and retention?",
                }
            ).decode()
        )
        await recv_tokens(tab_a, 3)
        await tab_a.close()
        tab_b = await _ws(session, b, token)
        await tab_b.send_str(
            orjson.dumps({"type": "resume", "id": "long", "after_seq": 1}).decode()
        )
        frames = await recv_tokens(tab_b, 3)
        assert frames[0]["type"] == "start"
        seqs = [f["seq"] for f in frames if f["type"] == "token"]
        assert seqs == list(range(2, 2 + len(seqs)))
        await tab_b.send_str(orjson.dumps({"type": "cancel", "id": "long"}).decode())
        frames += await recv_until(tab_b, "end", "long", timeout=5)
        assert frames[-1]["finish_reason"] == "cancelled"


async def test_python_client_against_a_real_server(tmp_path, database_url):
    async with (
        server_process(tmp_path, database_url, TEST_SECRET) as server,
        aiohttp.ClientSession() as session,
    ):
        token = await _signup(session, server.url)
        async with ChatClient.connect(server.ws_url, token) as chat:
            assert chat.ready.email
            pieces = [p async for p in chat.ask("How do I embed the widget?")]
            assert len(pieces) > 3
            ack = await chat.send_message("What is the purge?", id="py-1")
            text = await chat.reply("py-1").text()
            again = [f async for f in await chat.resume("py-1", after_seq=-1)]
            assert again[-1].text == text and ack.message_id > 0
            assert await chat.ping() >= 0
        async with ChatClient.connect(server.ws_url, token, header_auth=False) as chat:
            assert chat.ready.user_id > 0


async def test_sigterm_stores_replies_and_closes_1001(tmp_path, database_url):
    async with (
        server_process(
            tmp_path, database_url, TEST_SECRET, LLM_TOKEN_DELAY_MS="50", SHUTDOWN_TIMEOUT_S="0.3"
        ) as server,
        aiohttp.ClientSession() as session,
    ):
        token = await _signup(session, server.url)
        ws = await _ws(session, server, token)
        await ws.send_str(
            orjson.dumps(
                {"type": "message", "id": "t", "text": "Tell me about the purge settings"}
            ).decode()
        )
        await recv_until(ws, "start", "t")
        server.proc.send_signal(signal.SIGTERM)
        frames, msg = await recv_until_close(ws)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
        end = frames[-1]
        assert end["type"] == "end" and end["message_id"]
        code = await server.stop(sig=None)
        assert code == 0, server.output()
