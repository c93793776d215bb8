"""WebSocket helpers for tests: read frames as JSON, collect a reply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientWebSocketResponse, WSMsgType

TIMEOUT = 10.0


async def recv(ws: ClientWebSocketResponse, timeout: float = TIMEOUT) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return orjson.loads(msg.data)


async def recv_until_close(ws, timeout: float = 15.0) -> tuple[list[dict[str, Any]], Any]:
    """Every text frame up to the first other message (the close); returns both."""
    frames = []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type != WSMsgType.TEXT:
            return frames, msg
        frames.append(orjson.loads(msg.data))


async def recv_until(ws, kind: str, id: str | None = None, timeout: float = TIMEOUT):
    """Frames up to and including the first of `kind` (for `id`, when given)."""
    frames = []
    while True:
        frame = await recv(ws, timeout)
        frames.append(frame)
        if frame["type"] == kind and (id is None or frame.get("id") == id):
            return frames


async def recv_tokens(ws, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Frames up to and including the `count`-th `token` frame."""
    frames, tokens = [], 0
    while tokens < count:
        frames.append(await recv(ws, timeout))
        tokens += frames[-1]["type"] == "token"
    return frames


async def connect(client, token: str, **kwargs):
    ws = await client.ws_connect(
        "/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"}, **kwargs
    )
    ready = await recv(ws)
    assert ready["type"] == "ready", ready
    return ws


def reply_frames(frames, id):
    return [f for f in frames if f.get("id") == id]


# A knowledge base whose one answer is long (about 200 tokens), and the question it answers.
LONG_KB = Path(__file__).with_name("long_knowledge.json")
LONG_QUESTION = "marathon training plan weeks"


def frame(**fields) -> str:
    return orjson.dumps(fields).decode()


async def send_message(ws, id: str, text: str) -> None:
    await ws.send_str(frame(type="message", id=id, text=text))
