"""A transport started as the chat starts one, with the list its subscription fills."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from server.fanout.backend import Backend, Delivery, transport


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        yield pool


@pytest.fixture
def open_backend(
    database_url: str, pool: asyncpg.Pool, fanout_url: str | None
) -> Callable[[], Any]:
    @asynccontextmanager
    async def open_one() -> AsyncIterator[tuple[Backend, list[Delivery]]]:
        """A started transport and the list its subscription fills."""
        backend = transport(fanout_url, database_url, pool)
        got: list[Delivery] = []
        subscribed = asyncio.Event()

        async def consume() -> None:
            async with backend.subscribe() as deliveries:
                subscribed.set()
                async for delivery in deliveries:
                    got.append(delivery)

        task = asyncio.create_task(consume())
        await subscribed.wait()
        await backend.start()
        await asyncio.wait_for(backend.listening.wait(), 10)
        try:
            yield backend, got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await backend.close()

    return open_one
