"""Publishing in batches, shared by the transports.

While one send is under way the next events gather, and consecutive tokens of
one reply merge into one `Tokens` event, so a busy instance makes one round
trip per batch instead of one per token. `publish` never blocks: the chat
calls it from the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from server.fanout.events import Event, Tokens

log = logging.getLogger(__name__)


class Batcher:
    """Gathers events and hands them to `send`, one batch at a time, in order.

    `send` owns its errors (a transport that cannot send logs and drops, or waits
    and retries). With `max_waiting`, events that pile up beyond it while a send
    waits are dropped and `on_dropped` is called: the transport then says it
    missed events, so the chat syncs its replies again.
    """

    def __init__(
        self,
        send: Callable[[list[Event]], Awaitable[None]],
        max_waiting: int | None = None,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        self._send = send
        self._waiting: list[Event] = []
        self._task: asyncio.Task[None] | None = None
        self._max_waiting = max_waiting
        self._on_dropped = on_dropped

    def add(self, event: Event) -> None:
        last = self._waiting[-1] if self._waiting else None
        if (
            isinstance(event, Tokens)
            and isinstance(last, Tokens)
            and last.client_id == event.client_id
            and last.user_id == event.user_id
            and last.seq + len(last.tokens) == event.seq
        ):
            self._waiting[-1] = replace(last, tokens=last.tokens + event.tokens)
            return
        if self._max_waiting is not None and len(self._waiting) >= self._max_waiting:
            log.warning("fan-out dropped %d events waiting to be sent", len(self._waiting))
            self._waiting = []
            if self._on_dropped is not None:
                self._on_dropped()
        self._waiting.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="fanout publish")

    async def _flush(self) -> None:
        while self._waiting:
            events, self._waiting = self._waiting, []
            await self._send(events)

    async def close(self, timeout_s: float) -> None:
        """Let the events waiting go out for up to `timeout_s`, then stop."""
        if self._task is None:
            return
        await asyncio.wait({self._task}, timeout=timeout_s)
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
