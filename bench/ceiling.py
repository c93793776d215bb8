"""The ceiling: a bare aiohttp server on uvloop that answers like ours, with no database.

    CEILING_TOKENS='["a ", "b"]' CEILING_WRITES=reply PORT=8100 python bench/ceiling.py

`GET /ws` answers every text frame `{"type":"message","id"}` with the frames our
server sends (`ack`, `start`, one `token` per entry of CEILING_TOKENS, `end`), built
the cheapest way aiohttp allows; `POST /chat` answers `{"message"}` with the REST
chat body. CEILING_WRITES says how the frames leave: `frame` (default), one
`send_frame` each (a system call a frame); `reply`, a reply's frames built with
`protocol.wire`'s header and written together with one `transport.write`, the
least a server can do for the same bytes (our server writes the ack, start and
tokens together, then the end after its commit: two writes). It checks no token
and stores nothing: what is left of our server's time against it is the price of
authentication, persistence and the reply machinery.
"""

from __future__ import annotations

import itertools
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import uvloop
from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.wire import text_frame_header

SOURCES = [{"id": "bench", "topic": "Benchmarks", "score": 0.9523}]


def make_app(tokens: list[str], writes: str = "frame") -> web.Application:
    text = "".join(tokens)
    ids = itertools.count(1)
    token_texts = [orjson.dumps(token) for token in tokens]

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, compress=False, decode_text=False)
        await ws.prepare(request)
        await ws.send_frame(
            b'{"type":"ready","protocol":1,"user":{"id":1,"email":"a@b.c"},"pending":[]}',
            WSMsgType.TEXT,
        )
        if writes == "reply":
            transport = request.transport
            assert transport is not None
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    parts = []
                    for frame in reply_frames(orjson.loads(msg.data)["id"]):
                        parts.append(text_frame_header(len(frame)))
                        parts.append(frame)
                    transport.write(b"".join(parts))
            return ws
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                for frame in reply_frames(orjson.loads(msg.data)["id"]):
                    await ws.send_frame(frame, WSMsgType.TEXT)
        return ws

    def reply_frames(cid: str) -> list[bytes]:
        """The reply to `cid`: `ack`, `start`, the tokens, `end`."""
        qid = orjson.dumps(cid)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        mid = next(ids)
        frames = [
            orjson.dumps({"type": "ack", "id": cid, "message_id": mid, "timestamp": now}),
            orjson.dumps({"type": "start", "id": cid, "sources": SOURCES}),
        ]
        prefix = b'{"type":"token","id":' + qid + b',"seq":'
        frames += [b'%s%d,"text":%s}' % (prefix, seq, t) for seq, t in enumerate(token_texts)]
        end = {"type": "end", "id": cid, "message_id": next(ids), "text": text}
        frames.append(orjson.dumps({**end, "finish_reason": "stop"}))
        return frames

    async def chat_handler(request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        mid = next(ids)
        answer = {
            "response": text,
            "sources": SOURCES,
            "reply_id": mid + 1,
            "finish_reason": "stop",
            "id": body.get("id", str(mid)),
            "message_id": mid,
        }
        next(ids)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/chat", chat_handler)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    tokens = orjson.loads(os.environ.get("CEILING_TOKENS", '["a ", "reply"]'))
    web.run_app(
        make_app(tokens, os.environ.get("CEILING_WRITES", "frame")),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8100")),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
