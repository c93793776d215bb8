"""A LISTEN connection of its own that reconnects by itself.

Notifications arrive only while a session listens, so each user of LISTEN
(the chat fan-out, the knowledge base) keeps one dedicated connection outside
the pool, notices promptly when the server goes away (a cheap query every few
seconds), and reconnects with a capped backoff. `on_connect` runs after every
(re)connection: the place to announce oneself or to catch up on what was
missed while nobody listened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

Callback = Callable[[Any, int, str, str], None]


class Listener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        callback: Callback,
        *,
        application_name: str,
        on_connect: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        on_lost: Callable[[], None] | None = None,
        keepalive_s: float = 5.0,
        max_delay_s: float = 2.0,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.callback = callback
        self.application_name = application_name
        self.on_connect = on_connect
        self.on_lost = on_lost
        self.keepalive_s = keepalive_s
        self.max_delay_s = max_delay_s
        self.conn: asyncpg.Connection | None = None
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting whenever the connection is lost."""
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": self.application_name}
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self.channel, self.callback)
                self.conn = conn
                if self.on_connect is not None:
                    await self.on_connect(conn)
                self.listening.set()
                delay = 0.2
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), self.keepalive_s)
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=5)
                log.warning("%s: lost the database; reconnecting", self.application_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: lost the database (%s); reconnecting", self.application_name, exc)
            self.listening.clear()
            if self.on_lost is not None:
                self.on_lost()
            if conn is not None and not conn.is_closed():
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay_s)

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close(timeout=5)
