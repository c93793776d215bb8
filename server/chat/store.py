"""Chat rows written with group commit: many messages per transaction.

Every caller awaits its own row; the rows that arrive while a transaction is
under way go into the next one, so an idle server commits each message at
once and a busy one commits hundreds together. A message is acknowledged
only after the transaction holding it has committed. The SQL is in
`server.db.group_commit`.
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

from server.db import group_commit
from server.db.batching import BatchLoop
from server.http import BIGINT_MAX

log = logging.getLogger(__name__)

MAX_BATCH = 500
RATE_WINDOW_S = 60


class IdConflict(Exception):
    """The client's id is stored with another text, or in another conversation."""


class UnknownConversation(Exception):
    """The message names a conversation that does not exist or is not the sender's."""


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class StoredMessage:
    message_id: int
    timestamp: datetime
    created: bool  # False: a resend of a stored message
    conversation_id: int | None


@dataclass(frozen=True, slots=True)
class StoredReply:
    reply_id: int | None  # the reply's row; None: the user message was deleted meanwhile
    timestamp: datetime | None


NOT_STORED = StoredReply(None, None)


@dataclass(frozen=True, slots=True)
class ReplyRow:
    """What a reply's row holds besides its message."""

    text: str
    finish_reason: str
    sources: list[dict[str, Any]]
    token_lengths: list[int]


@dataclass(slots=True)
class _NewReply:
    user_id: int
    reply_to: int  # 0: its message is in the same batch (`_NewMessage.reply`)
    row: ReplyRow
    future: asyncio.Future[StoredReply]


@dataclass(slots=True)
class _NewMessage:
    user_id: int
    client_id: str
    text: str
    conversation_id: int | None  # None: the user's most recently active one
    future: asyncio.Future[StoredMessage]
    reply: _NewReply | None = None  # generated already: stored with the message


def _resend(
    stored: StoredMessage, stored_text: str, text: str, conversation_id: int | None
) -> StoredMessage | IdConflict:
    """A second message with a stored client id: the same message again, or a conflict
    (another text, or another conversation named; naming none is no conflict)."""
    if stored_text != text or conversation_id not in (None, stored.conversation_id):
        return IdConflict()
    return StoredMessage(stored.message_id, stored.timestamp, False, stored.conversation_id)


class ChatStore:
    """Queues message and reply rows and commits them in batches."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        rate_per_minute: int = 0,
        batch_pool: asyncpg.Pool | None = None,
        wait_s: float = 0.0,
    ) -> None:
        """`pool` for everyone's reads of chat rows; the batches run on `batch_pool`
        (`server.db.pool.BATCH_SETTINGS`), by default on `pool` too. `wait_s`: how long
        a batch begun in a quiet spell gathers (`GROUP_COMMIT_WAIT_MS`)."""
        self.pool = pool
        self.rate_per_minute = rate_per_minute
        self._messages: list[_NewMessage] = []
        self._replies: list[_NewReply] = []
        self._batches = BatchLoop(
            batch_pool or pool, self._take, self._commit_batch, self._fail, wait_s
        )

    # -- public API ---------------------------------------------------------------------

    @property
    def batches(self) -> int:
        """Batches committed (or failed) so far."""
        return self._batches.batches

    async def add_message(
        self, user_id: int, client_id: str, text: str, conversation_id: int | None = None
    ) -> StoredMessage:
        """Store a user message once per (user, client id), in `conversation_id` (None: the
        user's most recently active conversation, made when there is none); raise
        IdConflict, RateLimited, UnknownConversation."""
        return await self.queue_message(user_id, client_id, text, conversation_id)[0]

    async def add_reply(
        self,
        user_id: int,
        reply_to: int,
        text: str,
        finish_reason: str,
        sources: list[dict[str, Any]],
        token_lengths: list[int],
    ) -> StoredReply:
        row = ReplyRow(text, finish_reason, sources, token_lengths)
        return await self.queue_reply(user_id, reply_to, row)

    async def add_exchange(
        self, user_id: int, client_id: str, text: str, conversation_id: int | None, row: ReplyRow
    ) -> tuple[StoredMessage, StoredReply]:
        """A message and its reply, generated already, in one batch: as `add_message`,
        and the reply's row when the message is new (else NOT_STORED)."""
        message, reply = self.queue_message(user_id, client_id, text, conversation_id, row)
        stored = await message
        assert reply is not None
        return stored, await reply

    # The methods above await these futures; the shared writer (`server.chat.store_writer`)
    # answers other processes from their callbacks instead, without a task per row.

    def queue_message(
        self,
        user_id: int,
        client_id: str,
        text: str,
        conversation_id: int | None,
        row: ReplyRow | None = None,
    ) -> tuple[asyncio.Future[StoredMessage], asyncio.Future[StoredReply] | None]:
        """Queue a message, and the reply generated for it if any, for the next batch: the
        futures of both (None: no reply given)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoredMessage] = loop.create_future()
        reply = None if row is None else _NewReply(user_id, 0, row, loop.create_future())
        if conversation_id is not None and not 1 <= conversation_id <= BIGINT_MAX:
            # No conversation has such an id.
            _fail_message(_NewMessage(user_id, client_id, text, None, future, reply), None)
        else:
            self._messages.append(
                _NewMessage(user_id, client_id, text, conversation_id, future, reply)
            )
            self._batches.kick()
        return future, None if reply is None else reply.future

    def queue_reply(
        self, user_id: int, reply_to: int, row: ReplyRow
    ) -> asyncio.Future[StoredReply]:
        """Queue a reply to stored message `reply_to` for the next batch: its future."""
        future: asyncio.Future[StoredReply] = asyncio.get_running_loop().create_future()
        self._replies.append(_NewReply(user_id, reply_to, row, future))
        self._batches.kick()
        return future

    async def close(self) -> None:
        """Let the last batch commit."""
        await self._batches.close()

    # -- batching ------------------------------------------------------------------------

    def _take(self) -> tuple[list[_NewMessage], list[_NewReply]] | None:
        if not (self._messages or self._replies):
            return None
        messages, self._messages = self._messages[:MAX_BATCH], self._messages[MAX_BATCH:]
        replies, self._replies = self._replies[:MAX_BATCH], self._replies[MAX_BATCH:]
        return messages, replies

    async def _commit_batch(
        self, conn: asyncpg.Connection, batch: tuple[list[_NewMessage], list[_NewReply]]
    ) -> None:
        await self._commit(conn, *batch)

    @staticmethod
    def _fail(batch: tuple[list[_NewMessage], list[_NewReply]], exc: Exception) -> None:
        for message in batch[0]:
            _fail_message(message, exc)
        for reply in batch[1]:
            _settle(reply.future, exc)

    async def _commit(
        self, conn: asyncpg.Connection, messages: list[_NewMessage], replies: list[_NewReply]
    ) -> None:
        # The same (user, client id) twice in one batch: the later ones follow the first.
        firsts: dict[tuple[int, str], _NewMessage] = {}
        for item in messages:
            firsts.setdefault((item.user_id, item.client_id), item)
        fresh = list(firsts.values())
        answered = [i.reply.row if i.reply is not None else None for i in fresh]
        args = (
            [i.user_id for i in fresh],
            [i.text for i in fresh],
            [i.client_id for i in fresh],
            [i.user_id for i in replies],
            [i.row.text for i in replies],
            [i.reply_to for i in replies],
            *_reply_columns([i.row for i in replies]),
            [i.conversation_id for i in fresh],
            # Beside each message: the reply stored with it, or NULLs.
            [r.text if r is not None else None for r in answered],
            *_reply_columns(answered),
        )
        outcome: dict[tuple[int, str], Any] = {}
        if self.rate_per_minute and fresh:
            async with conn.transaction():
                rows = await group_commit.insert_batch(conn, *args)
                await self._over_rate(conn, rows, outcome)
        else:
            rows = await group_commit.insert_batch(conn, *args)
        # Committed: only now may anyone learn of the rows.
        stored_replies: dict[int, StoredReply] = {}
        for r in rows:
            if r["reply_to"] is not None:
                stored_replies[r["reply_to"]] = StoredReply(r["id"], r["timestamp"])
            else:
                key = (r["user_id"], r["client_id"])
                outcome.setdefault(
                    key, StoredMessage(r["id"], r["timestamp"], True, r["conversation_id"])
                )
        # Resends, and rows another instance stored first: read back what is stored.
        await self._find_stored(conn, [i for k, i in firsts.items() if k not in outcome], outcome)
        missing = [i.reply_to for i in replies if i.reply_to not in stored_replies]
        if missing:
            # Already stored (a second generation after a failover) or the message is gone.
            for r in await group_commit.replies_to(conn, missing):
                stored_replies[r["reply_to"]] = StoredReply(r["id"], r["timestamp"])

        for item in messages:
            key = (item.user_id, item.client_id)
            result = outcome.get(key) or RuntimeError("the message was not stored")
            first = firsts[key]
            if item is not first and isinstance(result, StoredMessage):
                result = _resend(result, first.text, item.text, item.conversation_id)
            _settle(item.future, result)
            if item.reply is not None:
                answer = NOT_STORED
                if item is first and isinstance(result, StoredMessage) and result.created:
                    answer = stored_replies.get(result.message_id, NOT_STORED)
                _settle(item.reply.future, answer)
        for reply in replies:
            _settle(reply.future, stored_replies.get(reply.reply_to, NOT_STORED))

    @staticmethod
    async def _find_stored(
        conn: asyncpg.Connection,
        items: Sequence[_NewMessage],
        outcome: dict[tuple[int, str], Any],
    ) -> None:
        """Record the outcome of every item whose (user, client id) is already stored."""
        if not items:
            return
        asked = {(i.user_id, i.client_id): i for i in items}
        rows = await group_commit.existing_messages(
            conn, [k[0] for k in asked], [k[1] for k in asked]
        )
        for r in rows:
            key = (r["user_id"], r["client_id"])
            stored = StoredMessage(r["id"], r["timestamp"], True, r["conversation_id"])
            outcome[key] = _resend(
                stored, r["message"], asked[key].text, asked[key].conversation_id
            )
        # Neither inserted nor stored before: the conversation named is not the sender's.
        for key, item in asked.items():
            if key not in outcome and item.conversation_id is not None:
                outcome[key] = UnknownConversation()

    async def _over_rate(
        self,
        conn: asyncpg.Connection,
        rows: Sequence[asyncpg.Record],
        outcome: dict[tuple[int, str], Any],
    ) -> None:
        """Take back, before the commit, the batch's messages over CHAT_RATE_PER_MINUTE.

        Counted after the insert, so the batch's own rows count and the newest are taken
        back; resends were not inserted, so they never count.
        """
        inserted: dict[int, list[asyncpg.Record]] = {}  # user → rows inserted now, in order
        for r in rows:
            if r["reply_to"] is None:
                inserted.setdefault(r["user_id"], []).append(r)
        if not inserted:
            return
        counts = await group_commit.recent_counts(conn, list(inserted), RATE_WINDOW_S)
        refused: list[int] = []
        for c in counts:
            mine = inserted[c["user_id"]]
            excess = min(c["n"] - self.rate_per_minute, len(mine))
            if excess > 0:
                wait = max(1.0, float(c["left_s"]))
                for r in sorted(mine, key=lambda r: r["id"])[-excess:]:
                    refused.append(r["id"])
                    outcome[(r["user_id"], r["client_id"])] = RateLimited(wait)
        if refused:
            await group_commit.delete_rows(conn, refused)


def _reply_columns(
    rows: Sequence[ReplyRow | None],
) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Finish reasons, sources and token lengths of reply rows (None: NULLs), as the
    batch takes them."""
    return (
        [r.finish_reason if r else None for r in rows],
        # JSON text: asyncpg would read a list of lists as a 2-D array.
        [orjson.dumps(r.sources).decode() if r else None for r in rows],
        # An array literal per row, cast in SQL ('{3,1,4}'::integer[]).
        ["{" + ",".join(map(str, r.token_lengths)) + "}" if r else None for r in rows],
    )


def _fail_message(item: _NewMessage, exc: Exception | None) -> None:
    """The message is not stored (`exc` None: its conversation cannot exist), nor its reply:
    the message's error says why."""
    _settle(item.future, exc or UnknownConversation())
    if item.reply is not None:
        _settle(item.reply.future, NOT_STORED)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
