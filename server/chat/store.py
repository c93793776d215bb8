"""Chat rows written with group commit: many messages per transaction.

Every caller awaits its own row; the rows that arrive while a transaction is
under way go into the next one, so an idle server commits each message at
once and a busy one commits hundreds together. A message is acknowledged
only after the transaction holding it has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

log = logging.getLogger(__name__)

MAX_BATCH = 500
RATE_WINDOW_S = 60


class IdConflict(Exception):
    """The client's id is stored with another text."""


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class StoredMessage:
    message_id: int
    timestamp: datetime
    created: bool  # False: a resend of a stored message


@dataclass(frozen=True, slots=True)
class StoredReply:
    message_id: int | None  # None: the user message was deleted meanwhile
    timestamp: datetime | None


@dataclass(slots=True)
class _NewMessage:
    user_id: int
    client_id: str
    text: str
    future: asyncio.Future[StoredMessage]


@dataclass(slots=True)
class _NewReply:
    user_id: int
    reply_to: int
    text: str
    finish_reason: str
    sources: list[dict[str, Any]]
    token_lengths: list[int]
    future: asyncio.Future[StoredReply]


INSERT_MESSAGES = """
INSERT INTO chat_history (user_id, message, is_user_message, client_id)
SELECT u, m, true, c FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(u, m, c)
ON CONFLICT (user_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
RETURNING id, user_id, client_id, "timestamp"
"""

EXISTING_MESSAGES = """
SELECT id, user_id, client_id, message, "timestamp" FROM chat_history
WHERE (user_id, client_id) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))
"""

RECENT_COUNTS = """
SELECT user_id, count(*) AS n,
       extract(epoch FROM min("timestamp") + make_interval(secs => $2) - now()) AS left_s
FROM chat_history
WHERE user_id = ANY($1::bigint[]) AND is_user_message
  AND "timestamp" > now() - make_interval(secs => $2)
GROUP BY user_id
"""

INSERT_REPLIES = """
INSERT INTO chat_history
    (user_id, message, is_user_message, reply_to, finish_reason, sources, token_lengths)
SELECT t.u, t.m, false, t.r, t.f, t.s::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(t.l::jsonb)::integer)
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
     AS t(u, m, r, f, s, l)
JOIN chat_history q ON q.id = t.r
ON CONFLICT (reply_to) WHERE reply_to IS NOT NULL DO NOTHING
RETURNING id, reply_to, "timestamp"
"""


def _resend(stored: StoredMessage, stored_text: str, text: str) -> StoredMessage | IdConflict:
    """A second message with a stored client id: the same message again, or a conflict."""
    if stored_text != text:
        return IdConflict()
    return StoredMessage(stored.message_id, stored.timestamp, False)


class ChatStore:
    """Queues message and reply rows and commits them in batches."""

    def __init__(self, pool: asyncpg.Pool, rate_per_minute: int = 0) -> None:
        self.pool = pool
        self.rate_per_minute = rate_per_minute
        self._messages: list[_NewMessage] = []
        self._replies: list[_NewReply] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0

    # -- public API ---------------------------------------------------------------------

    async def add_message(self, user_id: int, client_id: str, text: str) -> StoredMessage:
        """Store a user message once per (user, client id); raise IdConflict, RateLimited."""
        future = asyncio.get_running_loop().create_future()
        self._messages.append(_NewMessage(user_id, client_id, text, future))
        self._kick()
        return await future

    async def add_reply(
        self,
        user_id: int,
        reply_to: int,
        text: str,
        finish_reason: str,
        sources: list[dict[str, Any]],
        token_lengths: list[int],
    ) -> StoredReply:
        future = asyncio.get_running_loop().create_future()
        self._replies.append(
            _NewReply(user_id, reply_to, text, finish_reason, sources, token_lengths, future)
        )
        self._kick()
        return await future

    async def close(self) -> None:
        """Let the last batch commit."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    # -- batching ------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._messages or self._replies:
            messages, self._messages = self._messages[:MAX_BATCH], self._messages[MAX_BATCH:]
            replies, self._replies = self._replies[:MAX_BATCH], self._replies[MAX_BATCH:]
            try:
                await self._commit(messages, replies)
            except Exception as exc:
                for item in (*messages, *replies):
                    if not item.future.done():
                        item.future.set_exception(exc)
            self.batches += 1

    async def _commit(self, messages: list[_NewMessage], replies: list[_NewReply]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            results: list[tuple[asyncio.Future[Any], Any]] = []
            if messages:
                results += await self._insert_messages(conn, messages)
            if replies:
                results += await self._insert_replies(conn, replies)
        # Committed: only now may anyone learn of the rows.
        for future, result in results:
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _insert_messages(
        self, conn: asyncpg.Connection, items: Sequence[_NewMessage]
    ) -> list[tuple[asyncio.Future[Any], Any]]:
        # The same (user, client id) twice in one batch: the later ones follow the first.
        firsts: dict[tuple[int, str], _NewMessage] = {}
        for item in items:
            firsts.setdefault((item.user_id, item.client_id), item)
        outcome: dict[tuple[int, str], Any] = {}
        await self._find_stored(conn, list(firsts.values()), firsts, outcome)

        fresh = [i for k, i in firsts.items() if k not in outcome]
        allowed = await self._within_rate(conn, fresh, outcome)
        if allowed:
            rows = await conn.fetch(
                INSERT_MESSAGES,
                [i.user_id for i in allowed],
                [i.text for i in allowed],
                [i.client_id for i in allowed],
            )
            for r in rows:
                outcome[(r["user_id"], r["client_id"])] = StoredMessage(
                    r["id"], r["timestamp"], True
                )
            # Stored by another instance between our look-up and our insert.
            raced = [i for i in allowed if (i.user_id, i.client_id) not in outcome]
            await self._find_stored(conn, raced, firsts, outcome)

        results: list[tuple[asyncio.Future[Any], Any]] = []
        for item in items:
            key = (item.user_id, item.client_id)
            result = outcome[key]
            if item is not firsts[key] and isinstance(result, StoredMessage):
                result = _resend(result, firsts[key].text, item.text)
            results.append((item.future, result))
        return results

    @staticmethod
    async def _find_stored(
        conn: asyncpg.Connection,
        items: Sequence[_NewMessage],
        firsts: dict[tuple[int, str], _NewMessage],
        outcome: dict[tuple[int, str], Any],
    ) -> None:
        """Record the outcome of every item whose (user, client id) is already stored."""
        if not items:
            return
        rows = await conn.fetch(
            EXISTING_MESSAGES, [i.user_id for i in items], [i.client_id for i in items]
        )
        for r in rows:
            key = (r["user_id"], r["client_id"])
            stored = StoredMessage(r["id"], r["timestamp"], True)
            outcome[key] = _resend(stored, r["message"], firsts[key].text)

    async def _within_rate(
        self,
        conn: asyncpg.Connection,
        items: Sequence[_NewMessage],
        outcome: dict[tuple[int, str], Any],
    ) -> list[_NewMessage]:
        """The items CHAT_RATE_PER_MINUTE allows; the others get RateLimited in `outcome`."""
        if not self.rate_per_minute or not items:
            return list(items)
        users = list({i.user_id for i in items})
        rows = await conn.fetch(RECENT_COUNTS, users, float(RATE_WINDOW_S))
        room = {u: self.rate_per_minute for u in users}
        wait = dict.fromkeys(users, float(RATE_WINDOW_S))
        for r in rows:
            room[r["user_id"]] -= r["n"]
            wait[r["user_id"]] = max(1.0, float(r["left_s"]))
        allowed = []
        for item in items:
            if room[item.user_id] > 0:
                room[item.user_id] -= 1
                allowed.append(item)
            else:
                outcome[(item.user_id, item.client_id)] = RateLimited(wait[item.user_id])
        return allowed

    async def _insert_replies(
        self, conn: asyncpg.Connection, items: Sequence[_NewReply]
    ) -> list[tuple[asyncio.Future[Any], Any]]:
        rows = await conn.fetch(
            INSERT_REPLIES,
            [i.user_id for i in items],
            [i.text for i in items],
            [i.reply_to for i in items],
            [i.finish_reason for i in items],
            # JSON text: asyncpg would read a list of lists as a 2-D array.
            [orjson.dumps(i.sources).decode() for i in items],
            [orjson.dumps(i.token_lengths).decode() for i in items],
        )
        stored = {r["reply_to"]: StoredReply(r["id"], r["timestamp"]) for r in rows}
        missing = [i.reply_to for i in items if i.reply_to not in stored]
        if missing:
            # Already stored (a second generation after a failover) or the message is gone.
            for r in await conn.fetch(
                'SELECT id, reply_to, "timestamp" FROM chat_history WHERE reply_to = ANY($1)',
                missing,
            ):
                stored[r["reply_to"]] = StoredReply(r["id"], r["timestamp"])
        return [(i.future, stored.get(i.reply_to, StoredReply(None, None))) for i in items]
