"""The benchmarks' smoke run: a few seconds of the real load generator against a real server.

Asserts correctness only (every acked message and every ended reply stored exactly once,
no protocol error), never speed: CI machines are too noisy for timed tests.
"""

from __future__ import annotations

from pathlib import Path

from bench.harness import (
    QUESTION,
    ceiling_server,
    chat_server,
    insert_users,
    mint_tokens,
    reply_tokens,
    verify_stored,
)
from bench.loadgen import LoadGen


async def test_chat_load_stores_every_acked_message_and_ended_reply_once(
    database_url: str, tmp_path: Path
) -> None:
    async with chat_server(database_url, tmp_path) as server:
        rows = await insert_users(database_url, 6, "x")
        ids = [user_id for user_id, _ in rows]
        users = list(zip(ids, mint_tokens(ids), strict=True))
        async with LoadGen(server.ws_url, users, active=4, processes=2, question=QUESTION) as gen:
            opened = await gen.open(ramp_per_s=200)
            assert (opened.held, opened.failed) == (6, 0)
            start, window = gen.window(warmup_s=0.2, duration_s=1.0)
            phase = await gen.chat(start, window)
            assert not phase.errors
            assert phase.completed > 0 and phase.end
            rest = await gen.rest(server.url + "/api/v1/chat/chat", 3, *gen.window(0.1, 0.5))
            assert not rest.errors and rest.completed > 0
            assert not await gen.close()
    records = phase.records + rest.records
    assert all(r.reply_id is not None for r in records)
    stored = await verify_stored(database_url, records)
    assert stored == {
        "acked": len(records),
        "ended": len(records),
        "lost": 0,
        "duplicated": 0,
        "wrong": 0,
        "unheard": 0,
    }


async def test_the_ceiling_answers_with_the_same_frames(tmp_path: Path) -> None:
    tokens = reply_tokens()
    async with ceiling_server(tmp_path, tokens) as ceiling:
        ws_url = ceiling.url.replace("http", "ws") + "/ws"
        async with LoadGen(ws_url, [(1, "unused")], active=1, question=QUESTION) as gen:
            await gen.open()
            phase = await gen.chat(*gen.window(0.1, 0.3))
            assert not phase.errors and phase.completed > 0
            assert {r.reply_text for r in phase.records} == {"".join(tokens)}
