"""Sockets whose account changed under them: closed with 4401 within a few seconds.

A WebSocket authenticates once, and the account can change afterwards: deactivated,
deleted, or its tokens revoked (the verification link used, the password changed:
`token_generation` moved on). Every SESSION_RECHECK_S (2 s), each instance reads the rows of the
users it holds sockets for, in one indexed query, and closes the sockets that no
longer stand.

Chosen over a NOTIFY from each place that changes a user (the fan-out would carry
it): the recheck also sees changes made in SQL directly, needs nothing from the
fan-out, and costs one query every few seconds per instance whatever the number of
sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiohttp import web

from protocol import CloseCode, Error, ErrorCode, encode_bytes
from server import keys

log = logging.getLogger(__name__)


def still_valid(user: Mapping[str, Any] | None, generation: int) -> bool:
    """An existing, active user whose tokens of `generation` are not revoked (pure)."""
    return user is not None and bool(user["is_active"]) and user["token_generation"] == generation


def to_close(conns: Iterable[Any], users: Mapping[int, Mapping[str, Any]]) -> list[Any]:
    """The connections (`user_id`, `generation`) that no longer stand (pure)."""
    return [c for c in conns if not still_valid(users.get(c.user_id), c.generation)]


def end_session(conn: Any, message: str) -> None:
    """Tell the client why, then close with 4401."""
    conn.push(encode_bytes(Error(None, ErrorCode.UNAUTHORIZED, message)))
    conn.close_soon(CloseCode.AUTH_FAILED, message)


async def recheck_once(app: web.Application) -> int:
    """Close the sockets of users gone, inactive or revoked; how many were closed."""
    conns = [c for c in app[keys.CONNECTIONS] if not c.closing]
    if not conns:
        return 0
    rows = await app[keys.POOL].fetch(
        "SELECT id, is_active, token_generation FROM users WHERE id = ANY($1::bigint[])",
        sorted({c.user_id for c in conns}),
    )
    closing = to_close(conns, {r["id"]: r for r in rows})
    for conn in closing:
        end_session(conn, "the account was deactivated, deleted or its tokens revoked")
    return len(closing)


async def revocation_context(app: web.Application) -> AsyncIterator[None]:
    """The recheck, every SESSION_RECHECK_S, for the life of the app (after the chat's)."""
    every_s = app[keys.SETTINGS].session_recheck_s

    async def loop() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                closed = await recheck_once(app)
            except Exception as exc:  # the database away: the next round tries again
                log.warning("session recheck failed: %s: %s", type(exc).__name__, exc)
                continue
            if closed:
                log.info("closed %d sockets of deactivated, deleted or revoked users", closed)

    task = asyncio.create_task(loop(), name="session-recheck")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
