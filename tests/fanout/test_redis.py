"""The Redis transport when Redis misbehaves: a blink loses nothing, a restart is said
(`Missed`) and survived, the stream is trimmed by age and every key expires, and
/readyz says the fan-out is degraded while the instance goes on chatting.

These run on a private `redis-server` of their own, which they stop and start."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from server import keys
from server.app import create_app
from server.fanout import redis as redis_transport
from server.fanout.backend import Missed
from server.fanout.events import Cancel, Ended, Hello, Tokens, encode
from tests.accounts import signup
from tests.chat.ws import connect, recv_until
from tests.fanout.deliveries import events_from, eventually, eventually_async
from tests.processes import PrivateRedis, message


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def fanout_url(private_redis: PrivateRedis) -> str:
    """Every transport of this module talks to the private Redis."""
    return private_redis.url


async def kill_connections_of(url: str, instance: str) -> int:
    """Cut every connection the transport of `instance` has, as a network blink would."""
    admin = Redis.from_url(url)
    try:
        clients = await admin.client_list()
        ids = [c["id"] for c in clients if c["name"] == redis_transport.KEY_PREFIX + instance]
        for id in ids:
            await admin.client_kill_filter(_id=id)
        return len(ids)
    finally:
        await admin.aclose()


async def test_a_blink_loses_nothing_and_needs_no_sync(open_backend, fanout_url, monkeypatch):
    monkeypatch.setattr(redis_transport, "RECONNECT_FIRST_S", 0.5)
    async with open_backend() as (a, _), open_backend() as (b, got_b):
        assert await kill_connections_of(fanout_url, b.instance) >= 1
        await eventually(lambda: not b.listening.is_set())
        for seq in range(20):  # published while b is away
            a.publish(Tokens(1, "r", seq, (f"{seq} ",)))
        a.publish(Ended(1, "r", 5, "stop"))
        await eventually(lambda: any(isinstance(e, Ended) for e in events_from(got_b, a.instance)))
        tokens = [
            t for e in events_from(got_b, a.instance) if isinstance(e, Tokens) for t in e.tokens
        ]
        assert tokens == [f"{seq} " for seq in range(20)]
        assert b.listening.is_set() and not any(isinstance(d, Missed) for d in got_b)


async def test_a_restart_of_redis_is_said_and_survived(open_backend, private_redis):
    async with open_backend() as (a, got_a), open_backend() as (b, got_b):
        assert await eventually_async(a.peers, lambda peers: peers == {b.instance})
        private_redis.stop()
        await eventually(lambda: not a.listening.is_set() and not b.listening.is_set())
        # While Redis is away the peers last seen stand, so events wait for them.
        assert await a.peers() == {b.instance}
        a.publish(Ended(1, "during", 9, "stop"))
        private_redis.start()
        await eventually(lambda: a.listening.is_set() and b.listening.is_set())
        # The stream began again: each says it missed events (and so syncs its replies
        # to the others) and hello (so the others sync theirs to it), and reads the new
        # stream from its start: the event that waited for Redis arrives too.
        assert any(isinstance(d, Missed) for d in got_a)
        assert any(isinstance(d, Missed) for d in got_b)
        await eventually(lambda: Ended(1, "during", 9, "stop") in events_from(got_b, a.instance))
        await eventually(lambda: events_from(got_a, b.instance).count(Hello()) == 2)
        await eventually(lambda: events_from(got_b, a.instance).count(Hello()) == 1)
        a.publish(Cancel(1, "after"))
        b.publish(Cancel(2, "after"))
        await eventually(lambda: Cancel(1, "after") in events_from(got_b, a.instance))
        await eventually(lambda: Cancel(2, "after") in events_from(got_a, b.instance))
        assert await eventually_async(a.peers, lambda peers: peers == {b.instance})


async def test_a_new_stream_whose_ids_are_behind_is_read_whole(
    open_backend, private_redis, monkeypatch
):
    """A Redis failed over to one whose clock is behind: the new stream's entries have
    ids below the last one read, and are read all the same."""
    monkeypatch.setattr(redis_transport, "RECONNECT_FIRST_S", 1.0)
    async with open_backend() as (b, got_b):
        private_redis.stop()
        await eventually(lambda: not b.listening.is_set())
        private_redis.start()
        admin = Redis.from_url(private_redis.url)
        try:
            await admin.xadd(b.stream, {"e": encode("elsewhere", Cancel(5, "old-clock"))}, id="1-1")
        finally:
            await admin.aclose()
        await eventually(lambda: Cancel(5, "old-clock") in events_from(got_b, "elsewhere"))
        assert any(isinstance(d, Missed) for d in got_b)


async def test_events_piling_up_while_redis_is_away_are_dropped_and_said(
    open_backend, private_redis, monkeypatch
):
    monkeypatch.setattr(redis_transport, "MAX_WAITING", 5)
    async with open_backend() as (a, got_a):
        a.publish(Cancel(1, "first"))  # the sending task now waits for Redis
        private_redis.stop()
        await eventually(lambda: not a.listening.is_set())
        for n in range(10):
            a.publish(Cancel(1, f"c{n}"))
        await eventually(lambda: any(isinstance(d, Missed) for d in got_a))


async def test_the_stream_is_trimmed_by_age_and_every_key_expires(
    open_backend, fanout_url, monkeypatch
):
    admin = Redis.from_url(fanout_url)
    try:
        async with open_backend() as (a, _):
            for n in range(300):  # one entry each: every publish waits for the one before
                a.publish(Cancel(1, f"c{n}"))
                await eventually(lambda n=n: a.sent == n + 1)
            assert await admin.xlen(a.stream) >= 300
            monkeypatch.setattr(redis_transport, "KEEP_S", 0.5)
            await asyncio.sleep(0.6)
            a.publish(Cancel(1, "last"))
            await eventually(lambda: a.sent == 301)
            # MINID ~ trims whole nodes of the stream (100 entries each) older than KEEP_S.
            assert await admin.xlen(a.stream) < 200
            for key in await admin.keys(a.prefix + "*"):
                assert await admin.pttl(key) > 0, key
    finally:
        await admin.aclose()


async def test_readyz_says_degraded_while_redis_is_away_and_chat_goes_on(
    aiohttp_client, make_settings, private_redis
):
    client = await aiohttp_client(create_app(make_settings(fanout_url=private_redis.url)))
    resp = await client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"status": "ready", "fanout": "ok"}
    _, token, _ = await signup(client)
    ws = await connect(client, token)

    assert "\nchat_fanout_connected 1.0\n" in await (await client.get("/metrics")).text()

    private_redis.stop()
    await eventually(lambda: not client.app[keys.FANOUT].listening.is_set())
    resp = await client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"status": "ready", "fanout": "degraded"}
    assert "\nchat_fanout_connected 0.0\n" in await (await client.get("/metrics")).text()
    await ws.send_str(message("while-away"))
    frames = await recv_until(ws, "end", "while-away")
    assert frames[0]["type"] == "ack" and frames[-1]["finish_reason"] == "stop"

    private_redis.start()
    await eventually(lambda: client.app[keys.FANOUT].listening.is_set())
    resp = await client.get("/readyz")
    assert await resp.json() == {"status": "ready", "fanout": "ok"}
    assert "\nchat_fanout_connected 1.0\n" in await (await client.get("/metrics")).text()


async def test_entries_that_are_not_events_are_skipped(open_backend, fanout_url):
    async with open_backend() as (b, got_b):
        admin = Redis.from_url(fanout_url)
        try:
            for body in (b"\xff\xfe", b"elsewhere|{not json", b"", b"no bar at all"):
                await admin.xadd(b.stream, {"e": body})
            await admin.xadd(b.stream, {"other": b"field"})
            await admin.xadd(b.stream, {"e": encode("elsewhere", Cancel(5, "fine"))})
        finally:
            await admin.aclose()
        await eventually(lambda: Cancel(5, "fine") in events_from(got_b, "elsewhere"))
        assert b.listening.is_set()


async def test_an_instance_starts_without_redis_and_joins_when_it_comes(
    aiohttp_client, make_settings, private_redis
):
    private_redis.stop()
    client = await aiohttp_client(create_app(make_settings(fanout_url=private_redis.url)))
    resp = await client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"status": "ready", "fanout": "degraded"}
    _, token, _ = await signup(client)
    ws = await connect(client, token)
    await ws.send_str(message("no-redis-yet"))
    assert (await recv_until(ws, "end", "no-redis-yet"))[-1]["finish_reason"] == "stop"
    private_redis.start()
    await eventually(lambda: client.app[keys.FANOUT].listening.is_set())
    assert await (await client.get("/readyz")).json() == {"status": "ready", "fanout": "ok"}
