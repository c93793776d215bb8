"""What users would pick instead: python-socketio on aiohttp (uvloop) answering like ours.

    CEILING_TOKENS='["a ", "b"]' PORT=8200 python bench/socketio_server.py

The Python stack of the best-known chat UIs (Open WebUI, Chainlit) is Socket.IO. This
server answers every `message` event (`{"id", "text"}`) with our protocol's frames as
Socket.IO events to the sender, one `emit` each: `ack`, `start`, one `token` per
entry of CEILING_TOKENS, `end`. It checks no token and stores nothing (no database):
what it costs is the price of Socket.IO's framing and dispatch alone.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime

import orjson
import socketio
import uvloop
from aiohttp import web

SOURCES = [{"id": "bench", "topic": "Benchmarks", "score": 0.9523}]


def make_app(tokens: list[str]) -> web.Application:
    text = "".join(tokens)
    ids = itertools.count(1)
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

    @sio.on("message")
    async def message(sid: str, data: dict[str, str]) -> None:
        cid = data["id"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await sio.emit("ack", {"id": cid, "message_id": next(ids), "timestamp": now}, to=sid)
        await sio.emit("start", {"id": cid, "sources": SOURCES}, to=sid)
        for seq, token in enumerate(tokens):
            await sio.emit("token", {"id": cid, "seq": seq, "text": token}, to=sid)
        end = {"id": cid, "message_id": next(ids), "text": text, "finish_reason": "stop"}
        await sio.emit("end", end, to=sid)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    tokens = orjson.loads(os.environ.get("CEILING_TOKENS", '["a ", "reply"]'))
    web.run_app(
        make_app(tokens),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8200")),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
