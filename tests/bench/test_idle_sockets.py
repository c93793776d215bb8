"""The load generator's idle connections: frames parsed as RFC 6455 says, pings
answered, and a close the client did not ask for counted, against a real aiohttp server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web

from bench.idle_sockets import TEXT, IdleSocket, parse_frames, upgrade_request
from protocol.wire import text_frame_header


def test_whole_frames_come_off_the_buffer_and_a_partial_one_stays() -> None:
    payloads = [b"x" * 5, b"y" * 200, b"z" * 70_000]
    wire = b"".join(text_frame_header(len(p)) + p for p in payloads)
    buffer = bytearray(wire[:-1])
    assert parse_frames(buffer) == [(TEXT, payloads[0]), (TEXT, payloads[1])]
    buffer += wire[-1:]
    assert parse_frames(buffer) == [(TEXT, payloads[2])]
    assert buffer == b""


def test_a_masked_frame_from_the_server_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_frames(bytearray(b"\x81\x85abcdhello"))


@pytest.fixture
async def pinging_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Sends `ready`, a ping, then closes with 4401 once the pong came back."""
    pongs: list[bytes] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        assert request.headers["Authorization"] == "Bearer t0k"
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_str('{"type":"ready"}')
        await ws.ping(b"beat")
        msg = await ws.receive()
        assert msg.type == WSMsgType.PONG
        pongs.append(msg.data)
        await ws.close(code=4401, message=b"bye")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}", pongs
    await runner.cleanup()


async def test_an_idle_socket_answers_pings_and_counts_the_servers_close(
    pinging_server: tuple[str, list[bytes]],
) -> None:
    address, pongs = pinging_server
    host, port = address.split(":")
    errors: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    _, sock = await loop.create_connection(
        lambda: IdleSocket(errors, lambda: False), host, int(port), local_addr=("127.0.0.2", 0)
    )
    sock.transport.write(upgrade_request(address, "/ws", "t0k"))  # type: ignore[union-attr]
    assert await asyncio.wait_for(sock.ready, 5) is None
    await asyncio.wait_for(sock.done, 5)
    assert pongs == [b"beat"]
    assert errors == {"closed by the server (4401) after 1 pings": 1}


async def test_closing_on_purpose_is_no_error(pinging_server: tuple[str, list[bytes]]) -> None:
    address, _ = pinging_server
    host, port = address.split(":")
    errors: Counter[str] = Counter()
    _, sock = await asyncio.get_running_loop().create_connection(
        lambda: IdleSocket(errors, lambda: True), host, int(port)
    )
    sock.transport.write(upgrade_request(address, "/ws", "t0k"))  # type: ignore[union-attr]
    assert await asyncio.wait_for(sock.ready, 5) is None
    await sock.close()
    assert sock.done.done() and not errors


async def test_a_refused_handshake_is_the_reason_ready_gives(
    pinging_server: tuple[str, list[bytes]],
) -> None:
    address, _ = pinging_server
    host, port = address.split(":")
    _, sock = await asyncio.get_running_loop().create_connection(
        lambda: IdleSocket(Counter(), lambda: False), host, int(port)
    )
    sock.transport.write(upgrade_request(address, "/nowhere", "t0k"))  # type: ignore[union-attr]
    assert await asyncio.wait_for(sock.ready, 5) == "handshake: HTTP/1.1 404 Not Found"
