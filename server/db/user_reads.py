"""Users read in batches: every request's token check, one query for all that wait.

Each REST request and each WebSocket reads its user (is the account active, is the
token's generation the user's) before anything else. One query per request was the
largest cost of REST chat: a statement, a round trip and a pool connection each, on
the database's side as much as on ours. Reads that arrive while a query is under
way go into the next one, as the chat store's group commit does for writes: an idle
server reads each user at once, a busy one reads dozens with one statement.

Nothing is cached: a read starts after the request asked for it, so a token revoked
by a transaction committed before the request arrived is seen as revoked.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from server.db import queries

MAX_BATCH = 500


class UserReads:
    """`get(user_id)`: the user's row (`queries.USER_COLUMNS`) or None, read in batches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiting: dict[int, list[asyncio.Future[asyncpg.Record | None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.batches = 0

    async def get(self, user_id: int) -> asyncpg.Record | None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(user_id, []).append(future)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_loop())
        return await future

    async def _read_loop(self) -> None:
        # One connection serves consecutive batches, as in the store's group commit; a
        # failed batch fails its callers and gives the connection back.
        while self._waiting:
            conn: asyncpg.Connection | None = None
            try:
                while self._waiting:
                    ids = list(self._waiting)[:MAX_BATCH]
                    batch = {i: self._waiting.pop(i) for i in ids}
                    try:
                        if conn is None:
                            conn = await self.pool.acquire()
                        rows = await queries.users_by_ids(conn, ids)
                    except Exception as exc:
                        _settle(batch, exc)
                        await self._release(conn)
                        conn = None
                        continue
                    self.batches += 1
                    found = {r["id"]: r for r in rows}
                    for user_id, futures in batch.items():
                        _settle({user_id: futures}, found.get(user_id))
            finally:
                await self._release(conn)

    async def _release(self, conn: asyncpg.Connection | None) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):
                await self.pool.release(conn)


def _settle(
    batch: dict[int, list[asyncio.Future[asyncpg.Record | None]]],
    result: asyncpg.Record | Exception | None,
) -> None:
    for futures in batch.values():
        for future in futures:
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
