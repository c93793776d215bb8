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

import asyncpg

from server.db import queries
from server.db.batching import BatchLoop

MAX_BATCH = 500

_Batch = dict[int, list[asyncio.Future[asyncpg.Record | None]]]


class UserReads:
    """`get(user_id)`: the user's row (`queries.USER_COLUMNS`) or None, read in batches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._waiting: dict[int, list[asyncio.Future[asyncpg.Record | None]]] = {}
        self._batches = BatchLoop(pool, self._take, self._read, _settle)

    @property
    def batches(self) -> int:
        return self._batches.batches

    async def get(self, user_id: int) -> asyncpg.Record | None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(user_id, []).append(future)
        self._batches.kick()
        return await future

    def _take(self) -> _Batch | None:
        if not self._waiting:
            return None
        ids = list(self._waiting)[:MAX_BATCH]
        return {i: self._waiting.pop(i) for i in ids}

    @staticmethod
    async def _read(conn: asyncpg.Connection, batch: _Batch) -> None:
        found = {r["id"]: r for r in await queries.users_by_ids(conn, list(batch))}
        for user_id, futures in batch.items():
            _settle({user_id: futures}, found.get(user_id))


def _settle(batch: _Batch, result: asyncpg.Record | Exception | None) -> None:
    for futures in batch.values():
        for future in futures:
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
