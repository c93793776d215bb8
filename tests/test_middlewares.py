"""Headers every response carries (issue 18, item 8)."""

from __future__ import annotations

import asyncio

from tests.accounts import PASSWORD, signup


async def test_api_answers_are_never_cached(client, user):
    auth = user["headers"]
    answers = [
        await client.post(
            "/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD}
        ),
        await client.get("/api/v1/auth/me", headers=auth),
        await client.post("/api/v1/auth/refresh", headers=auth),
        await client.get("/api/v1/chat/chat-history", headers=auth),
        await client.get("/api/v1/auth/me"),  # a 401 too
    ]
    signed_up = await client.post(
        "/api/v1/auth/signup", json={"email": "cache-" + user["email"], "password": PASSWORD}
    )
    for resp in [*answers, signed_up]:
        assert resp.headers["Cache-Control"] == "no-store", (resp.url, resp.status)


async def test_the_server_header_names_no_version(client):
    _, token, _ = await signup(client)
    responses = [
        await client.get("/"),
        await client.get("/healthz"),
        await client.get("/static/widget.js"),
        await client.get("/nowhere"),
        await client.get("/api/v1/auth/me"),
    ]
    async with client.ws_connect(
        "/api/v1/chat/ws", headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        handshake = ws._response  # the 101 answer
        responses.append(handshake)
    for resp in responses:
        assert resp.headers["Server"] == "chat-server", (resp.url, resp.headers.get("Server"))


async def test_a_malformed_request_line_names_no_version(client):
    """Answered by aiohttp's parser before any view or hook runs."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(4096), 5)).decode(errors="replace")
    writer.close()
    assert head.split("\r\n")[0].endswith("400 Bad Request"), head
    assert "\r\nServer: chat-server\r\n" in head
    assert "aiohttp/" not in head and "Python/" not in head, head
