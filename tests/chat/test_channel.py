"""The WebSocket channel against the real server, database and sockets."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import WSMsgType

from server import keys
from server.app import create_app
from server.auth.tokens import TokenIssuer
from tests.accounts import TEST_SECRET, signup
from tests.chat.ws import (
    LONG_KB,
    LONG_QUESTION,
    connect,
    frame,
    recv,
    recv_tokens,
    recv_until,
    recv_until_close,
    reply_frames,
    send_message,
)


@pytest.fixture
async def slow_client(aiohttp_client, make_settings):
    """A server whose mock LLM streams a long reply slowly (about 200 tokens, 10 ms each)."""
    return await aiohttp_client(
        create_app(make_settings(knowledge_path=LONG_KB, llm_token_delay_ms=10.0))
    )


async def test_message_is_acked_then_streamed_and_stored(client, user, ws_connect, db):
    ws = await ws_connect(user["token"])
    await send_message(ws, "m1", "How do I embed the widget?")
    frames = await recv_until(ws, "end", "m1")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "ack" and kinds[1] == "start" and kinds[-1] == "end"
    ack, start, end = frames[0], frames[1], frames[-1]
    assert ack["id"] == "m1" and isinstance(ack["message_id"], int)
    assert ack["timestamp"].endswith("Z")
    assert start["sources"] and all(isinstance(s["id"], str) for s in start["sources"])
    assert len(start["sources"]) <= 5
    tokens = [f for f in frames if f["type"] == "token"]
    assert len(tokens) > 3
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert end["text"] == "".join(t["text"] for t in tokens)
    assert end["finish_reason"] == "stop"
    rows = await db.fetch(
        "SELECT id, message, is_user_message, client_id, reply_to FROM chat_history"
        " WHERE user_id = $1 ORDER BY id",
        user["id"],
    )
    assert [(r["is_user_message"], r["message"]) for r in rows] == [
        (True, "How do I embed the widget?"),
        (False, end["text"]),
    ]
    assert rows[0]["id"] == ack["message_id"] and rows[0]["client_id"] == "m1"
    assert rows[1]["id"] == end["message_id"] and rows[1]["reply_to"] == ack["message_id"]


async def test_ready_is_first_and_names_the_user(client, user):
    ws = await client.ws_connect(
        "/api/v1/chat/ws", headers={"Authorization": f"Bearer {user['token']}"}
    )
    ready = await recv(ws)
    assert ready == {
        "type": "ready",
        "protocol": 1,
        "user": {"id": user["id"], "email": user["email"], "is_guest": False},
        "pending": [],
    }


async def test_first_frame_auth(client, user):
    ws = await client.ws_connect("/api/v1/chat/ws")
    await ws.send_str(frame(type="auth", token=user["token"]))
    assert (await recv(ws))["type"] == "ready"
    await ws.send_str(frame(type="ping"))
    assert await recv(ws) == {"type": "pong"}


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"type": "ping"}, "unauthorized"),
        ({"type": "auth", "token": "garbage"}, "unauthorized"),
        ({"type": "message", "id": "x", "text": "hi"}, "unauthorized"),
        ({"type": "auth"}, "unauthorized"),
    ],
)
async def test_anything_but_a_good_auth_first_closes_4401(client, first, code):
    ws = await client.ws_connect("/api/v1/chat/ws")
    await ws.send_str(orjson.dumps(first).decode())
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == code and error["id"] is None
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 4401


async def test_expired_token_in_first_frame_is_token_expired(client, user):
    issuer = TokenIssuer(TEST_SECRET, "HS256", 60, clock=lambda: time.time() - 120)
    token, _ = issuer.issue(user["id"])
    ws = await client.ws_connect("/api/v1/chat/ws")
    await ws.send_str(frame(type="auth", token=token))
    error = await recv(ws)
    assert error["code"] == "token_expired"
    assert (await ws.receive(timeout=5)).data == 4401


async def test_bad_header_token_refused_at_handshake(client):
    resp = await client.get(
        "/api/v1/chat/ws",
        headers={
            "Authorization": "Bearer nope",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert resp.status == 401
    assert "detail" in await resp.json()


async def test_no_auth_in_time_closes_4408(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(ws_auth_timeout_s=0.5)))
    ws = await client.ws_connect("/api/v1/chat/ws")
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 4408


async def test_origin_allow_list(aiohttp_client, make_settings):
    settings = make_settings(
        allowed_origins=("https://good.example",), public_url="https://chat.example"
    )
    client = await aiohttp_client(create_app(settings))
    _, token, _ = await signup(client)
    auth = {"Authorization": f"Bearer {token}"}
    for origin in ("https://good.example", "https://chat.example"):
        ws = await client.ws_connect("/api/v1/chat/ws", headers={**auth, "Origin": origin})
        assert (await recv(ws))["type"] == "ready"
        await ws.close()
    ws = await client.ws_connect("/api/v1/chat/ws", headers=auth)  # no Origin: not a browser
    assert (await recv(ws))["type"] == "ready"
    with pytest.raises(Exception) as info:
        await client.ws_connect(
            "/api/v1/chat/ws", headers={**auth, "Origin": "https://evil.example"}
        )
    assert getattr(info.value, "status", None) == 403
    # The own origin is PUBLIC_URL's, never one made of the Host header (DNS rebinding).
    with pytest.raises(Exception) as info:
        await client.ws_connect(
            "/api/v1/chat/ws",
            headers={**auth, "Origin": "http://rebound.example", "Host": "rebound.example"},
        )
    assert getattr(info.value, "status", None) == 403


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_frame"),
        ("[1, 2]", "invalid_frame"),
        (frame(type="dance"), "invalid_frame"),
        (frame(text="no type"), "invalid_frame"),
        (frame(type="message", id="a"), "invalid_frame"),
        (frame(type="message", id=5, text="hi"), "invalid_frame"),
        (frame(type="message", id="a", text=""), "invalid_frame"),
        (frame(type="message", id="a" * 65, text="hi"), "invalid_frame"),
        (frame(type="message", id="a", text="nul\x00"), "invalid_frame"),
        (frame(type="message", id="a", text="x" * 4001), "too_large"),
        (frame(type="resume", id="a", after_seq="1"), "invalid_frame"),
        (frame(type="resume", id="a", after_seq=True), "invalid_frame"),
        (frame(type="cancel"), "invalid_frame"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_lives(
    client, user, ws_connect, raw, code
):
    ws = await ws_connect(user["token"])
    await ws.send_str(raw)
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == code, error
    assert error["message"]
    await ws.send_str(frame(type="ping"))
    assert (await recv(ws))["type"] == "pong"


async def test_binary_frame_is_invalid(client, user, ws_connect):
    ws = await ws_connect(user["token"])
    await ws.send_bytes(b'{"type":"ping"}')
    error = await recv(ws)
    assert error["code"] == "invalid_frame" and error["id"] is None


async def test_text_of_4000_code_points_is_accepted(client, user, ws_connect):
    ws = await ws_connect(user["token"])
    await send_message(ws, "emoji", "😀" * 4000)
    assert (await recv(ws))["type"] == "ack"
    await recv_until(ws, "end", "emoji")


async def test_frame_over_64_kib_closes_1009(client, user, ws_connect):
    ws = await ws_connect(user["token"])
    await ws.send_str(frame(type="message", id="big", text="x" * 70_000))
    msg = await ws.receive(timeout=5)
    while msg.type == WSMsgType.TEXT:
        msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 1009


async def test_a_frame_of_exactly_64_kib_is_read(client, user, ws_connect):
    ws = await ws_connect(user["token"])
    head = '{"type":"ping","pad":"'
    await ws.send_str(head + "x" * (64 * 1024 - len(head) - 2) + '"}')
    assert (await recv(ws))["type"] == "pong"


async def test_resend_same_id_gets_same_ack_and_no_second_row(client, user, ws_connect, db):
    ws = await ws_connect(user["token"])
    await send_message(ws, "same", "What is the purge?")
    first = await recv_until(ws, "end", "same")
    await send_message(ws, "same", "What is the purge?")
    second = await recv_until(ws, "end", "same")
    assert second[0] == first[0]  # the same ack
    assert [f for f in second if f["type"] == "token"] == [f for f in first if f["type"] == "token"]
    assert second[-1] == first[-1]
    count = await db.fetchval("SELECT count(*) FROM chat_history WHERE user_id = $1", user["id"])
    assert count == 2


async def test_same_id_other_text_is_id_conflict(client, user, ws_connect):
    ws = await ws_connect(user["token"])
    await send_message(ws, "c1", "first text")
    await recv_until(ws, "end", "c1")
    await send_message(ws, "c1", "another text")
    error = await recv(ws)
    assert error == {**error, "type": "error", "id": "c1", "code": "id_conflict"}


async def test_racing_resends_store_one_row(client, user, db):
    a = await connect(client, user["token"])
    b = await connect(client, user["token"])
    await asyncio.gather(
        send_message(a, "race", "racing text"), send_message(b, "race", "racing text")
    )
    acks, texts = [], []
    for ws in (a, b):
        # Each is a sender: its ack (never another tab's `message`) comes first, then the
        # whole reply.
        frames = reply_frames(await recv_until(ws, "end", "race"), "race")
        kinds = [f["type"] for f in frames]
        assert kinds[:2] == ["ack", "start"] and kinds[-1] == "end", kinds
        assert set(kinds[2:-1]) == {"token"}
        assert [f["seq"] for f in frames[2:-1]] == list(range(len(frames) - 3))
        acks.append(frames[0])
        texts.append(frames[-1]["text"])
    assert acks[0]["message_id"] == acks[1]["message_id"]
    assert texts[0] == texts[1]
    count = await db.fetchval(
        "SELECT count(*) FROM chat_history WHERE user_id = $1 AND client_id = 'race'", user["id"]
    )
    assert count == 1


async def test_replies_come_in_the_order_sent(slow_client, user_factory=None):
    _, token, _ = await signup(slow_client)
    ws = await connect(slow_client, token)
    ids = [f"o{i}" for i in range(4)]
    for i in ids:
        await send_message(ws, i, "green tea" if i != "o0" else LONG_QUESTION)
    seen_starts, ended = [], set()
    while len(ended) < len(ids):
        f = await recv(ws)
        if f["type"] == "start":
            seen_starts.append(f["id"])
        elif f["type"] == "end":
            ended.add(f["id"])
    assert seen_starts == ids


async def test_cancel_stops_at_once_and_stores_partial(slow_client, db):
    _, token, _user_id = await signup(slow_client)
    ws = await connect(slow_client, token)
    await send_message(ws, "long", LONG_QUESTION)
    frames = await recv_tokens(ws, 5)
    await ws.send_str(frame(type="cancel", id="long"))
    frames += await recv_until(ws, "end", "long", timeout=2)
    end = frames[-1]
    assert end["finish_reason"] == "cancelled"
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    assert end["text"] == "".join(tokens)
    assert len(tokens) < 100
    stored = await db.fetchrow(
        "SELECT message, finish_reason FROM chat_history WHERE id = $1", end["message_id"]
    )
    assert stored["message"] == end["text"] and stored["finish_reason"] == "cancelled"
    # A cancel for a finished reply does nothing; for an unknown id: unknown_message.
    await ws.send_str(frame(type="cancel", id="long"))
    await ws.send_str(frame(type="cancel", id="never-sent"))
    error = await recv(ws)
    assert error["code"] == "unknown_message" and error["id"] == "never-sent"


async def test_cancel_of_a_queued_reply_ends_it_empty(slow_client):
    _, token, _ = await signup(slow_client)
    ws = await connect(slow_client, token)
    await send_message(ws, "first", LONG_QUESTION)
    await send_message(ws, "second", "green tea")
    await recv_until(ws, "ack", "second")
    await ws.send_str(frame(type="cancel", id="second"))
    frames = await recv_until(ws, "end", "second", timeout=2)
    second = reply_frames(frames, "second")
    assert [f["type"] for f in second] == ["start", "end"]
    assert second[-1]["text"] == "" and second[-1]["finish_reason"] == "cancelled"
    await ws.send_str(frame(type="cancel", id="first"))
    await recv_until(ws, "end", "first")


async def test_resume_mid_stream_and_after_end(slow_client, db):
    _, token, _ = await signup(slow_client)
    ws = await connect(slow_client, token)
    await send_message(ws, "r1", LONG_QUESTION)
    seen = await recv_tokens(ws, 10)
    await ws.close()  # drop mid-reply

    ws2 = await connect(slow_client, token)
    await ws2.send_str(frame(type="resume", id="r1", after_seq=4))
    frames = await recv_until(ws2, "end", "r1")
    assert frames[0]["type"] == "start"
    tokens = [f for f in frames if f["type"] == "token"]
    assert tokens[0]["seq"] == 5
    assert [t["seq"] for t in tokens] == list(range(5, 5 + len(tokens)))
    first_five = [f["text"] for f in seen if f["type"] == "token"][:5]
    assert frames[-1]["text"] == "".join(first_five + [t["text"] for t in tokens])
    assert frames[-1]["finish_reason"] == "stop"

    # After the end: replayed from the database, identical.
    await ws2.send_str(frame(type="resume", id="r1", after_seq=-1))
    again = await recv_until(ws2, "end", "r1")
    assert [f["text"] for f in again if f["type"] == "token"] == [
        t["text"] for t in seen if t["type"] == "token"
    ][:10] + [f["text"] for f in again if f["type"] == "token"][10:]
    assert again[-1] == frames[-1]
    # at or past the last token: start then end
    await ws2.send_str(frame(type="resume", id="r1", after_seq=10_000))
    tail = await recv_until(ws2, "end", "r1")
    assert [f["type"] for f in tail] == ["start", "end"]
    await ws2.send_str(frame(type="resume", id="nope", after_seq=-1))
    assert (await recv(ws2))["code"] == "unknown_message"


async def test_disconnect_mid_reply_still_completes_once(slow_client, db):
    _, token, user_id = await signup(slow_client)
    ws = await connect(slow_client, token)
    await send_message(ws, "gone", LONG_QUESTION)
    await recv_until(ws, "start", "gone")
    await ws.close()
    replies = slow_client.app[keys.REPLIES]
    reply = replies.get(user_id, "gone")
    assert reply is not None, "the reply stopped with its connection"
    await asyncio.wait_for(reply.done.wait(), 10)
    rows = await db.fetch(
        "SELECT finish_reason FROM chat_history WHERE user_id = $1 AND NOT is_user_message",
        user_id,
    )
    assert [r["finish_reason"] for r in rows] == ["stop"]
    assert replies.get(user_id, "gone") is None
    assert reply.task is not None and reply.task.done()


async def test_ready_lists_pending_replies(slow_client):
    _, token, _ = await signup(slow_client)
    ws = await connect(slow_client, token)
    await send_message(ws, "p1", LONG_QUESTION)
    await recv_until(ws, "start", "p1")
    ws2 = await slow_client.ws_connect(
        "/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"}
    )
    ready = await recv(ws2)
    assert [p["id"] for p in ready["pending"]] == ["p1"]
    assert isinstance(ready["pending"][0]["message_id"], int)


async def test_other_tabs_see_the_conversation(client, user):
    a = await connect(client, user["token"])
    b = await connect(client, user["token"])
    await send_message(a, "tab", "How do I embed the widget?")
    a_frames = await recv_until(a, "end", "tab")
    b_frames = await recv_until(b, "end", "tab")
    assert a_frames[0]["type"] == "ack"
    echo = b_frames[0]
    assert echo["type"] == "message" and echo["text"] == "How do I embed the widget?"
    assert echo["message_id"] == a_frames[0]["message_id"]
    assert a_frames[1:] == b_frames[1:]
    assert not [f for f in a_frames if f["type"] == "message"]


async def test_other_users_see_nothing(client, user):
    _, other_token, _ = await signup(client)
    other = await connect(client, other_token)
    mine = await connect(client, user["token"])
    await send_message(mine, "private", "secret question")
    await recv_until(mine, "end", "private")
    await other.send_str(frame(type="resume", id="private", after_seq=-1))
    assert (await recv(other))["code"] == "unknown_message"
    await other.send_str(frame(type="ping"))
    assert (await recv(other))["type"] == "pong"  # nothing else arrived before it


async def test_too_many_connections_closes_1008(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(max_connections_per_user=2)))
    _, token, _ = await signup(client)
    await connect(client, token)
    await connect(client, token)
    ws = await client.ws_connect("/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"})
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 1008


async def test_chat_rate_limit(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(chat_rate_per_minute=2)))
    _, token, user_id = await signup(client)
    ws = await connect(client, token)
    for i in range(2):
        await send_message(ws, f"rl{i}", "green tea")
        await recv_until(ws, "end", f"rl{i}")
    await send_message(ws, "rl2", "green tea")
    error = await recv(ws)
    assert error["code"] == "rate_limited" and error["retry_after"] > 0
    # a resend does not count
    await send_message(ws, "rl0", "green tea")
    assert (await recv(ws))["type"] == "ack"
    count = await db.fetchval(
        "SELECT count(*) FROM chat_history WHERE user_id = $1 AND is_user_message", user_id
    )
    assert count == 2
    resp = await client.post(
        "/api/v1/chat/chat",
        json={"message": "green tea"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1


async def test_expiring_token_warns_then_closes_4401_unless_renewed(client, user):
    short = TokenIssuer(TEST_SECRET, "HS256", access_ttl_s=2)
    token, _ = short.issue(user["id"])
    ws = await client.ws_connect("/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"})
    assert (await recv(ws))["type"] == "ready"
    warning = await recv(ws, timeout=5)
    assert warning["code"] == "token_expired" and warning["id"] is None
    expired = await recv(ws, timeout=5)
    assert expired["code"] == "token_expired"
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 4401


async def test_fresh_auth_keeps_the_connection(client, user):
    short = TokenIssuer(TEST_SECRET, "HS256", access_ttl_s=2)
    token, _ = short.issue(user["id"])
    ws = await client.ws_connect("/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"})
    assert (await recv(ws))["type"] == "ready"
    assert (await recv(ws, timeout=5))["code"] == "token_expired"
    await ws.send_str(frame(type="auth", token=user["token"]))
    await asyncio.sleep(1.5)
    await ws.send_str(frame(type="ping"))
    assert (await recv(ws))["type"] == "pong"


async def test_shutdown_stores_replies_then_closes_1001(aiohttp_client, make_settings, db):
    app = create_app(
        make_settings(knowledge_path=LONG_KB, llm_token_delay_ms=10.0, shutdown_timeout_s=0.2)
    )
    client = await aiohttp_client(app)
    _, token, _user_id = await signup(client)
    ws = await connect(client, token)
    await send_message(ws, "sd", LONG_QUESTION)
    await recv_until(ws, "start", "sd")
    shutdown = asyncio.create_task(app.shutdown())
    frames, msg = await recv_until_close(ws, timeout=10)
    await shutdown
    assert msg.type == WSMsgType.CLOSE and msg.data == 1001
    end = [f for f in frames if f["type"] == "end"][-1]
    assert end["finish_reason"] == "error"
    row = await db.fetchrow("SELECT message FROM chat_history WHERE id = $1", end["message_id"])
    assert row["message"] == end["text"]


async def test_a_peer_too_slow_to_read_is_closed_1013(aiohttp_client, make_settings):
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed

    slow_client = await aiohttp_client(create_app(make_settings(knowledge_path=LONG_KB)))
    _, token, _ = await signup(slow_client)
    ws = await connect(slow_client, token)
    await send_message(ws, "slow", LONG_QUESTION)
    await recv_until(ws, "end", "slow")
    url = f"ws://{slow_client.host}:{slow_client.port}/api/v1/chat/ws"
    # max_queue=1: this client stops reading from its socket after one frame.
    async with ws_connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, max_queue=1
    ) as lazy:
        resume = frame(type="resume", id="slow", after_seq=-1)
        for _ in range(1500):  # about 20 MB of replayed frames, never read
            await lazy.send(resume)
        # Let the server fall behind before this client reads again (both share a core).
        connections = slow_client.app[keys.CONNECTIONS]
        for _ in range(200):
            if any(c.closing for c in connections):
                break
            await asyncio.sleep(0.05)
        # It goes on sending while the server closes: frames the server must read and drop
        # until this client's close, or the socket is reset and the close frame lost.
        for _ in range(20):
            await lazy.send(resume)
            await asyncio.sleep(0.05)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(60):
                while True:
                    await lazy.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_a_silent_peer_is_pinged_and_dropped_when_its_silence_reaches_the_limit(
    client, user, monkeypatch
):
    from server.chat import session

    monkeypatch.setattr(session, "PING_EVERY_S", 0.8)
    monkeypatch.setattr(session, "SILENT_LIMIT_S", 1.0)
    # autoping off: this client never answers a ping, nor sends anything.
    silent = await connect(client, user["token"], autoping=False)
    started = time.monotonic()
    pings, closed = 0, None
    while closed is None:
        msg = await silent.receive(timeout=5)
        if msg.type == WSMsgType.PING:
            pings += 1
        elif msg.type == WSMsgType.CLOSE:
            closed = (msg.data, time.monotonic() - started)
    assert pings == 1
    code, after = closed
    assert code == 1008
    # At the limit, not at the next ping after it (1.6 s).
    assert 0.9 <= after < 1.5, after


async def test_a_peer_answering_pings_stays(client, user, monkeypatch):
    from server.chat import session

    monkeypatch.setattr(session, "PING_EVERY_S", 0.3)
    monkeypatch.setattr(session, "SILENT_LIMIT_S", 0.5)
    ws = await connect(client, user["token"])  # aiohttp answers pings itself
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2):  # receive(timeout=) restarts at every ping
            await ws.receive()
    assert not ws.closed
    await ws.send_str(frame(type="ping"))
    assert await recv(ws) == {"type": "pong"}


async def test_without_a_rate_limit_a_burst_of_messages_is_all_answered(
    aiohttp_client, make_settings
):
    # Replies take a while (a 2 ms token delay) while the messages are acked at once, so
    # they queue up on the connection: more than 32 of them wait at one point.
    settings = make_settings(chat_rate_per_minute=0, llm_token_delay_ms=2.0)
    client = await aiohttp_client(create_app(settings))
    _, token, _ = await signup(client)
    ws = await connect(client, token)
    ids = [f"burst{i}" for i in range(40)]
    await asyncio.gather(*(send_message(ws, i, f"green tea {i}") for i in ids))
    acked, ended = set(), set()
    while len(ended) < len(ids):
        f = await recv(ws)
        assert f["type"] != "error", f
        if f["type"] == "ack":
            acked.add(f["id"])
        elif f["type"] == "end":
            ended.add(f["id"])
    assert acked == ended == set(ids)


async def test_replies_waiting_on_one_connection_are_bounded(slow_client, monkeypatch):
    from server.chat import session

    monkeypatch.setattr(session, "MAX_QUEUED_REPLIES", 3)
    _, token, _ = await signup(slow_client)
    ws = await connect(slow_client, token)
    for i in range(4):
        await send_message(ws, f"q{i}", LONG_QUESTION)
    error = await recv_until(ws, "error", "q3")
    assert error[-1]["code"] == "rate_limited" and error[-1]["retry_after"] > 0
    # The connection lives on and the first three are answered.
    ended = set()
    while len(ended) < 3:
        f = await recv(ws)
        if f["type"] == "end":
            ended.add(f["id"])
    assert ended == {"q0", "q1", "q2"}


async def test_a_reply_ended_while_the_database_was_away_is_stored_once_it_is_back(
    client, user, ws_connect, db, monkeypatch
):
    from server.chat import replies as replies_module

    monkeypatch.setattr(replies_module, "STORE_RETRY_FIRST_S", 0.05)
    store = client.app[keys.REPLIES].store
    real_add_reply = store.add_reply
    failures = 3

    async def add_reply(*args, **kwargs):
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionRefusedError("the database is away")
        return await real_add_reply(*args, **kwargs)

    monkeypatch.setattr(store, "add_reply", add_reply)
    ws = await ws_connect(user["token"])
    await send_message(ws, "away", "How do I embed the widget?")
    frames = await recv_until(ws, "end", "away")
    error, end = frames[-2], frames[-1]
    assert error["type"] == "error" and error["code"] == "unavailable"
    assert end["finish_reason"] == "error" and end["message_id"] is None
    # Until it is stored, resume replays it as it was sent.
    await ws.send_str(frame(type="resume", id="away", after_seq=-1))
    replayed = await recv_until(ws, "end", "away")
    assert replayed[-1] == end
    assert "".join(f["text"] for f in replayed if f["type"] == "token") == end["text"]

    for _ in range(100):
        row = await db.fetchrow(
            "SELECT r.message, r.finish_reason FROM chat_history m"
            " JOIN chat_history r ON r.reply_to = m.id"
            " WHERE m.user_id = $1 AND m.client_id = 'away'",
            user["id"],
        )
        if row is not None:
            break
        await asyncio.sleep(0.05)
    assert row is not None, "the reply was not stored after the database came back"
    assert (row["message"], row["finish_reason"]) == (end["text"], "error")
    assert not client.app[keys.REPLIES].unstored
