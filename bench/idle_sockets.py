"""Held connections that only answer: the handshake, `ready`, a pong for every ping.

The load generator's idle connections (all but the chatting ones) are these, not aiohttp
clients: an aiohttp `ClientWebSocketResponse` with its session request, response and
reader costs the client about as much CPU and memory as a connection costs the server,
and at 100,000 connections on two cores the client would starve the server it measures
(measured: connects timed out behind the server's full accept queue). This is RFC 6455
as much as a silent client needs, over a bare `asyncio.Protocol`: the upgrade request,
the `101` answer, unmasked server frames, masked pongs and the closing handshake.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import sys
from collections import Counter
from collections.abc import Callable
from typing import cast

import aiohttp
import orjson

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
USER_AGENT = f"Python/{sys.version_info[0]}.{sys.version_info[1]} aiohttp/{aiohttp.__version__}"
_ZERO_MASK = b"\0\0\0\0"  # a valid mask key (RFC 6455 5.3); the payload is sent as it is


def upgrade_request(host: str, path: str, token: str) -> bytes:
    """The handshake of a client that authenticates with a Bearer header: the headers
    aiohttp's `ws_connect` sends, so the server parses and keeps the same request as
    for the chatting connections (and as in the figures taken with aiohttp clients)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
        f"User-Agent: {USER_AGENT}\r\n\r\n"
    ).encode()


# Linux: bind() to (address, 0) without picking the port; connect() picks it, by the
# whole 4-tuple. Without it each bind searches the address's ports for a free one: 1 µs
# a bind with none taken, 1.6 ms with 15,000 taken (measured here), so a client process
# opening 16,000 spent 97 % of its time in the kernel, answered the server's pings late
# and the server dropped its peers for silence.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def connect_from(host: str, port: int, source: str | None) -> socket.socket:
    """A TCP socket connected to host:port from the address `source` (None: any)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A final, masked client frame of a control opcode (payload under 126 bytes)."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + _ZERO_MASK + payload


def parse_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take the whole unmasked frames off the front of `buffer`: (opcode, payload) each.

    A partial frame stays in the buffer for the next call. Raises ValueError for a masked
    or fragmented frame, which a server never sends (RFC 6455 5.1) and ours does not.
    """
    frames = []
    while len(buffer) >= 2:
        first, second = buffer[0], buffer[1]
        if second & 0x80 or not first & 0x80:
            raise ValueError("a masked or fragmented frame from the server")
        size, start = second & 0x7F, 2
        if size == 126:
            if len(buffer) < 4:
                break
            size, start = struct.unpack_from("!H", buffer, 2)[0], 4
        elif size == 127:
            if len(buffer) < 10:
                break
            size, start = struct.unpack_from("!Q", buffer, 2)[0], 10
        if len(buffer) < start + size:
            break
        frames.append((first & 0x0F, bytes(buffer[start : start + size])))
        del buffer[: start + size]
    return frames


class IdleSocket(asyncio.Protocol):
    """One held connection: `ready` resolves on the server's `ready` frame (to None) or
    on a failure before it (to the reason); pings are answered; anything else, and a
    close or loss the worker did not ask for, goes into `errors`."""

    __slots__ = (
        "_buffer",
        "_close_sent",
        "_upgraded",
        "closing",
        "done",
        "errors",
        "pings",
        "ready",
        "transport",
    )

    def __init__(self, errors: Counter[str], closing: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        self.errors = errors
        self.closing = closing
        self.ready: asyncio.Future[str | None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._close_sent = False
        self.pings = 0  # answered: a close for silence after some says they were not seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[: self._buffer.find(b"\r\n")])
            del self._buffer[: end + 4]
            if not status.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake: {status.decode(errors='replace')[:60]}")
                return
            self._upgraded = True
        try:
            frames = parse_frames(self._buffer)
        except ValueError as exc:
            self._fail(str(exc))
            return
        for opcode, payload in frames:
            self._on_frame(opcode, payload)

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == PING:
            self.pings += 1
            self.transport.write(client_frame(PONG, payload))
        elif opcode == TEXT and not self.ready.done():
            kind = orjson.loads(payload).get("type")
            if kind == "ready":
                self.ready.set_result(None)
            else:
                self._fail(f"no ready: {kind}")
        elif opcode == CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
            if not self.closing():
                self.errors[f"closed by the server ({code}) after {min(self.pings, 3)} pings"] += 1
            self._send_close(payload[:2])
            self.transport.close()
        elif opcode != PONG:
            self.errors[f"unexpected frame on an idle socket ({opcode})"] += 1

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_result(why)
        else:
            self.errors[why] += 1
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(f"closed before ready ({type(exc).__name__ if exc else 'EOF'})")
        elif not self.closing() and not self._close_sent:  # no closing handshake
            self.errors["connection lost"] += 1
        if not self.done.done():
            self.done.set_result(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def close(self, timeout_s: float = 5.0) -> None:
        """The closing handshake (1000), then wait for the server to close the socket."""
        if self.transport is None or self.done.done():
            return
        self._send_close(struct.pack("!H", 1000))
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout_s)
        except TimeoutError:
            self.transport.abort()

    def _send_close(self, code: bytes) -> None:
        if not self._close_sent and self.transport is not None:
            self._close_sent = True
            self.transport.write(client_frame(CLOSE, code))
