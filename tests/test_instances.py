"""Several instances on one database: workers on one port, fan-out only when there are
others, newcomers mid-reply, a killed instance's replies, one purge, one knowledge base.

The fan-out's tests run on both transports (`fanout_url`: LISTEN/NOTIFY, then Redis)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from server import keys
from server.app import create_app
from server.chat.fanout import GONE_AFTER_S, PEER_POLL_S
from server.chat.store_writer import APPLICATION_NAME
from server.fanout.backend import Received
from server.fanout.events import Hello, MessageStored
from server.fanout.postgres import LISTENER_PREFIX
from server.fanout.redis import ALIVE_TTL_S, KEY_PREFIX
from tests.accounts import TEST_SECRET, signup, unique_email
from tests.chat.ws import connect, recv, recv_until
from tests.processes import free_port, http_signup, message, server_process, ws_to


async def eventually(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(every)


async def listeners(db, fanout_url: str | None) -> int:
    """How many instances listen on the fan-out (LISTEN connections, or Redis heartbeats)."""
    if fanout_url is None:
        return await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE $1",
            LISTENER_PREFIX + "%",
        )
    name = await db.fetchval("SELECT current_database()")
    redis = Redis.from_url(fanout_url)
    try:
        return len(await redis.keys(f"{KEY_PREFIX}{name}:alive:*"))
    finally:
        await redis.aclose()


# -- in one process: publishing only with others there -------------------------------------


async def test_an_instance_alone_publishes_nothing(aiohttp_client, make_settings, fanout_url):
    settings = make_settings(llm_token_delay_ms=0.0, fanout_url=fanout_url)
    first = await aiohttp_client(create_app(settings))
    fanout = first.app[keys.FANOUT]
    await fanout.poll_peers()
    assert fanout.peers == frozenset()
    _, token, _ = await signup(first)
    ws = await connect(first, token)
    await ws.send_str(message("alone"))
    frames = await recv_until(ws, "end", "alone")
    assert len([f for f in frames if f["type"] == "token"]) > 3
    assert fanout.sent == 0

    second = await aiohttp_client(create_app(settings))
    other = second.app[keys.FANOUT]
    assert await fanout.poll_peers() == {other.instance}
    tab = await connect(second, token)
    await ws.send_str(message("together"))
    await recv_until(ws, "end", "together")
    seen = await recv_until(tab, "end", "together")
    assert seen[0]["type"] == "message" and fanout.sent > 0


async def test_a_hello_heard_while_the_peer_list_is_read_is_not_forgotten(
    aiohttp_client, make_settings, monkeypatch, fanout_url
):
    client = await aiohttp_client(create_app(make_settings(fanout_url=fanout_url)))
    fanout = client.app[keys.FANOUT]
    peers = fanout.backend.peers

    async def slow_peers():
        """The list of listeners, read before the newcomer listened, arrives late."""
        listed = await peers()
        await asyncio.sleep(0.2)
        return listed

    monkeypatch.setattr(fanout.backend, "peers", slow_peers)
    polling = asyncio.create_task(fanout.poll_peers())
    await asyncio.sleep(0.05)
    await fanout._apply(Received("newcomer", Hello()))
    assert "newcomer" in await polling
    assert "newcomer" in fanout.peers


async def test_an_instance_that_appears_mid_reply_mirrors_it(
    aiohttp_client, make_settings, fanout_url
):
    settings = make_settings(llm_token_delay_ms=30.0, fanout_url=fanout_url)
    first = await aiohttp_client(create_app(settings))
    _, token, _ = await signup(first)
    ws = await connect(first, token)
    await ws.send_str(message("early"))
    frames = await recv_until(ws, "token", "early")
    assert frames[-1]["seq"] == 0

    # No events were published for it: the newcomer learns it from the sync.
    second = await aiohttp_client(create_app(settings))
    mirrors = second.app[keys.REPLIES].active
    await eventually(lambda: any(k[1] == "early" for k in mirrors))
    tab = await connect(second, token)
    await tab.send_str(orjson.dumps({"type": "resume", "id": "early", "after_seq": -1}).decode())
    resumed = await recv_until(tab, "end", "early")
    frames += await recv_until(ws, "end", "early")
    sent = [f for f in frames if f["type"] == "token"]
    got = [f for f in resumed if f["type"] == "token"]
    assert [f["seq"] for f in got] == list(range(len(sent)))
    assert got == sent and resumed[-1] == frames[-1] and resumed[0]["type"] == "start"


async def test_a_resend_racing_across_instances_is_generated_once(
    aiohttp_client, make_settings, fanout_url
):
    settings = make_settings(llm_token_delay_ms=5.0, fanout_url=fanout_url)
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    generated = []
    for app in (first.app, second.app):
        pipeline = app[keys.PIPELINE]
        stream = pipeline.stream

        def counting(question, hits, stream=stream, name=app[keys.FANOUT].instance):
            generated.append(name)
            return stream(question, hits)

        pipeline.stream = counting
    await eventually(lambda: first.app[keys.FANOUT].peers and second.app[keys.FANOUT].peers)
    # Events reach the second instance 200 ms late, as across a busy network: its sender
    # learns the message is stored (a resend) before it learns who generates the reply.
    fanout = second.app[keys.FANOUT]
    apply = fanout._apply

    async def late(received, apply=apply):
        if isinstance(received.event, MessageStored):  # the events behind it queue up behind it
            await asyncio.sleep(0.2)
        await apply(received)

    fanout._apply = late
    _, token, _ = await signup(first)
    a, b = await connect(first, token), await connect(second, token)
    for attempt in range(5):
        id = f"race-{attempt}"
        generated.clear()
        await asyncio.gather(a.send_str(message(id)), b.send_str(message(id)))
        ends = []
        for ws in (a, b):
            frames = [f for f in await recv_until(ws, "end", id) if f.get("id") == id]
            assert frames[0]["type"] == "ack", [f["type"] for f in frames]
            ends.append(frames[-1])
        assert ends[0] == ends[1]
        assert len(generated) == 1, generated


# -- processes -----------------------------------------------------------------------------


async def test_workers_share_one_port_and_stop_together(tmp_path, database_url, db, fanout_url):
    port = free_port()
    env = {"WORKERS": "2", "FANOUT_URL": fanout_url or ""}
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, port=port, **env) as server,
        aiohttp.ClientSession() as session,
    ):

        async def both_listen() -> bool:
            return await listeners(db, fanout_url) == 2

        await eventually(both_listen, timeout=30)
        # Listening is not yet knowing each other: that takes a hello or a peer poll. A
        # message stored before then is not echoed to the other worker's tabs (the
        # newcomer's window that fanout.py documents).
        await asyncio.sleep(PEER_POLL_S * 1.5)
        token, _ = await http_signup(session, server.url)
        tabs = [(await ws_to(session, server.ws_url, token))[0] for _ in range(6)]
        await tabs[0].send_str(message("w1", "How do I embed the widget?"))
        sent = await recv_until(tabs[0], "end", "w1")
        for tab in tabs[1:]:
            seen = await recv_until(tab, "end", "w1")
            assert seen[0]["type"] == "message" and seen[1:] == sent[1:]
        code = await server.stop(signal.SIGTERM)
        assert code == 0, server.output()
        assert await listeners(db, fanout_url) == 0


async def test_workers_store_through_one_writer_and_outlive_it(tmp_path, database_url, db):
    """WORKERS=2 runs a shared writer; killed, its workers store their rows themselves
    until the supervisor has started it again, and nothing is lost or doubled."""
    async with (
        server_process(
            tmp_path, database_url, TEST_SECRET, port=free_port(), WORKERS="2"
        ) as server,
        aiohttp.ClientSession() as session,
    ):

        def linked(n: int) -> bool:
            return server.output().count("chat rows go to the shared writer") >= n

        def writers() -> list[int]:
            return [int(pid) for pid in re.findall(r"writer (\d+) started", server.output())]

        await eventually(lambda: linked(2), timeout=30)
        token, _ = await http_signup(session, server.url)
        headers = {"Authorization": f"Bearer {token}"}

        async def ask(n: int) -> None:
            body = {"message": "How do I embed the widget?", "id": f"w{n}"}
            async with session.post(
                f"{server.url}/api/v1/chat/chat", json=body, headers=headers
            ) as r:
                assert r.status == 200, await r.text()

        await asyncio.gather(*(ask(n) for n in range(6)))
        assert (
            await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = $1",
                APPLICATION_NAME,
            )
            >= 1
        )
        os.kill(writers()[0], signal.SIGKILL)
        await asyncio.gather(*(ask(n) for n in range(6, 12)))
        await eventually(lambda: len(writers()) == 2 and linked(4), timeout=30)
        await asyncio.gather(*(ask(n) for n in range(12, 18)))
        assert "lost the shared writer" in server.output()
        rows = await db.fetch(
            "SELECT q.client_id, count(r.id) AS replies FROM chat_history q"
            " LEFT JOIN chat_history r ON r.reply_to = q.id"
            " WHERE q.client_id LIKE 'w%' AND q.user_id = (SELECT user_id FROM chat_history"
            "  WHERE client_id = 'w0' ORDER BY id DESC LIMIT 1) GROUP BY q.client_id"
        )
        assert sorted(r["client_id"] for r in rows) == sorted(f"w{n}" for n in range(18))
        assert {r["replies"] for r in rows} == {1}
        assert await server.stop(signal.SIGTERM) == 0, server.output()


async def test_the_supervisor_starts_a_killed_worker_again(tmp_path, database_url):
    async with (
        server_process(
            tmp_path, database_url, TEST_SECRET, port=free_port(), WORKERS="2"
        ) as server,
        aiohttp.ClientSession() as session,
    ):

        def workers() -> list[int]:
            return [int(pid) for pid in re.findall(r"worker (\d+) started", server.output())]

        await eventually(lambda: len(workers()) == 2, timeout=30)
        os.kill(workers()[0], signal.SIGKILL)
        await eventually(lambda: len(workers()) == 3, timeout=30)
        assert f"worker {workers()[0]} exited with -9; restarting" in server.output()
        token, _ = await http_signup(session, server.url)
        assert token
        assert await server.stop(signal.SIGTERM) == 0, server.output()


async def test_a_killed_instance_s_replies_end_stored_on_the_others(
    tmp_path, database_url, db, fanout_url
):
    slow = {"LLM_TOKEN_DELAY_MS": "60", "FANOUT_URL": fanout_url or ""}
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, **slow) as a,
        server_process(tmp_path, database_url, TEST_SECRET, **slow) as b,
        aiohttp.ClientSession() as session,
    ):
        token, _ = await http_signup(session, a.url)
        on_a, _ = await ws_to(session, a.ws_url, token)
        on_b, _ = await ws_to(session, b.ws_url, token)
        await asyncio.sleep(1.5)  # both see each other
        await on_a.send_str(message("k1"))
        seen = await recv_until(on_b, "token", "k1")
        while len([f for f in seen if f["type"] == "token"]) < 3:
            seen.append(await recv(on_b))
        assert await a.stop(signal.SIGKILL) == -signal.SIGKILL
        # Gone: its LISTEN connection drops at once, its Redis key within ALIVE_TTL_S.
        rest = await recv_until(on_b, "end", "k1", timeout=GONE_AFTER_S + ALIVE_TTL_S + 5)
        assert [f["type"] for f in rest][-2:] == ["error", "end"]
        assert rest[-2]["code"] == "unavailable"
        end = rest[-1]
        tokens = [f["text"] for f in seen + rest if f["type"] == "token"]
        assert end["finish_reason"] == "error" and end["text"] == "".join(tokens)
        stored = await db.fetchrow(
            "SELECT message, finish_reason FROM chat_history WHERE id = $1", end["message_id"]
        )
        assert tuple(stored) == (end["text"], "error")
        # Resumed anywhere, it is the stored reply.
        await on_b.send_str(orjson.dumps({"type": "resume", "id": "k1", "after_seq": -1}).decode())
        again = await recv_until(on_b, "end", "k1")
        assert again[-1] == end


async def test_one_instance_purges_at_a_time(tmp_path, database_url, db):
    admin = unique_email("admin")
    env = {"PURGE_CRON": "* * * * * *", "PURGE_BATCH_SIZE": "20", "ADMIN_EMAILS": admin}
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, **env) as a,
        server_process(tmp_path, database_url, TEST_SECRET, **env) as b,
        aiohttp.ClientSession() as session,
    ):
        # The backlog appears once both are up: both instances' ticks (on the same
        # wall-clock seconds) then find it, and the one without the lock skips.
        user_id = await db.fetchval(
            "INSERT INTO users (email, hashed_password) VALUES ($1, 'x') RETURNING id",
            unique_email(),
        )
        await db.execute(
            'INSERT INTO chat_history (user_id, message, is_user_message, "timestamp")'
            " SELECT $1, 'old', true, now() - interval '40 days' FROM generate_series(1, 10000)",
            user_id,
        )
        await eventually(
            lambda: db.fetchval("SELECT count(*) = 0 FROM chat_history WHERE user_id = $1", user_id)
        )
        await asyncio.sleep(2.5)  # a few more ticks on both
        token, admin_id = await http_signup(session, a.url, admin)
        await db.execute("UPDATE users SET is_verified = true WHERE id = $1", admin_id)
        for server in (a, b):
            async with session.get(
                server.url + "/api/v1/admin/purge", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["last_run"]["status"] in ("ok", "skipped")
        logs = [a.output(), b.output()]
    # Each tick both instances try; while one works through the backlog the other skips.
    assert "purge skipped: another instance is running it" in "".join(logs)
    purged = [int(n) for n in re.findall(r"purged (\d+) history rows", "".join(logs))]
    assert sum(purged) >= 10000
    # The runs that deleted something never overlap in time, across the two instances.
    runs_a, runs_b = (purge_runs(log) for log in logs)
    assert runs_a or runs_b
    for start_a, end_a in runs_a:
        for start_b, end_b in runs_b:
            assert end_a <= start_b or end_b <= start_a


_RUN = re.compile(
    r"^(\S+ \S+) INFO .*purged [1-9]\d* history rows \(\d+ other\) in ([\d.]+) s$",
    re.MULTILINE,
)


def purge_runs(log: str) -> list[tuple[float, float]]:
    """(start, end) in seconds of every run that deleted rows, from a server's log."""
    runs = []
    for m in _RUN.finditer(log):
        end = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        runs.append((end - float(m.group(2)) - 0.002, end))
    return runs


async def test_a_document_added_on_one_instance_answers_on_the_other(tmp_path, database_url, db):
    kb = tmp_path / f"kb-{uuid.uuid4().hex[:10]}.json"
    kb.write_text(json.dumps([{"topic": "Teapots", "content": "Warm the teapot first."}]))
    admin = unique_email("admin")
    env = {"KNOWLEDGE_PATH": str(kb), "ADMIN_EMAILS": admin}
    async with (
        server_process(tmp_path, database_url, TEST_SECRET, **env) as a,
        server_process(tmp_path, database_url, TEST_SECRET, **env) as b,
        aiohttp.ClientSession() as session,
    ):
        token, user_id = await http_signup(session, a.url, admin)
        await db.execute("UPDATE users SET is_verified = true WHERE id = $1", user_id)
        headers = {"Authorization": f"Bearer {token}"}
        doc = {
            "id": "samovar",
            "topic": "Samovar heating",
            "content": "A samovar heats water with charcoal burning in its central chimney.",
        }
        async with session.post(
            a.url + "/api/v1/admin/documents", json=doc, headers=headers
        ) as resp:
            assert resp.status == 201, await resp.text()

        async def answered_on_b() -> bool:
            async with session.post(
                b.url + "/api/v1/chat/chat",
                json={"message": "How does a samovar heat its water?"},
                headers=headers,
            ) as resp:
                assert resp.status == 200
                sources = (await resp.json())["sources"]
            return bool(sources) and sources[0]["id"] == "samovar"

        await eventually(answered_on_b, timeout=15, every=0.2)  # a loaded machine: seconds
