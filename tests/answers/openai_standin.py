"""A local stand-in for an OpenAI-compatible chat-completions service.

A real aiohttp server on 127.0.0.1 (random port) that speaks the streaming format
(``data: {chat.completion.chunk}`` events, then ``data: [DONE]``) and can be told to
misbehave in each way a real service does: refuse the key, rate limit, fail, cut
the stream, send garbage, never answer, or stream slowly to be cancelled.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODES = ("stream", "status", "cut", "malformed", "hang", "stall", "slow", "json", "no-done")


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class OpenAIStandIn:
    """Behaviour knobs are plain attributes; set them before the request."""

    mode: str = "stream"
    pieces: list[str] = field(default_factory=lambda: ["Hello", ", ", "world", "!"])
    status: int = 200
    error_message: str = "something went wrong"
    retry_after: str | None = None
    piece_delay_s: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/v1"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- the handler -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self.mode in MODES, self.mode
        self.requests.append(Recorded(dict(request.headers), await request.json()))
        if self.mode == "hang":
            await asyncio.Event().wait()  # never answers; ends when the server shuts down
        if self.mode == "status":
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            body = {"error": {"message": self.error_message, "type": "test"}}
            return web.json_response(body, status=self.status, headers=headers)
        if self.mode == "json":
            return web.json_response(
                {"choices": [{"index": 0, "message": {"content": "".join(self.pieces)}}]}
            )

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await self._send(response, {"role": "assistant", "content": ""})
            for n, piece in enumerate(self.pieces):
                if self.mode == "cut" and n == len(self.pieces) // 2:
                    assert request.transport is not None
                    request.transport.close()  # drop the connection mid-stream
                    return response
                if self.mode == "malformed" and n == 1:
                    await response.write(b'data: {"choices": [{"delta": {"content": "x"\n\n')
                    await response.write_eof()
                    return response
                if self.mode == "stall" and n == 1:
                    await asyncio.Event().wait()
                if self.piece_delay_s:
                    await asyncio.sleep(self.piece_delay_s)
                await self._send(response, {"content": piece})
            await self._send(response, {}, finish_reason="stop")
            if self.mode != "no-done":
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response

    @staticmethod
    async def _send(
        response: web.StreamResponse, delta: dict[str, str], finish_reason: str | None = None
    ) -> None:
        chunk = {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "model": "standin",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
