"""The shared writer: one process that group-commits the chat rows of every worker.

Each worker of `WORKERS` commits its own batches otherwise, so with four workers a commit
carries a quarter of the messages it would carry with one, and PostgreSQL pays each
commit's fixed cost four times as often (bench/README.md: 0.27 commits a message against
0.08, PostgreSQL's CPU a message +96 %). The supervisor (`run_server.py`) starts this
process beside the workers; each worker sends its rows over a Unix socket
(`server.chat.store_link`) and this process queues them into one `ChatStore`, whose
batches then hold every worker's rows. PostgreSQL stays the record: a worker that loses
this process stores its rows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from functools import partial
from typing import Any

from server.chat import store_wire as wire
from server.chat.store import ChatStore, StoredMessage, StoredReply
from server.chat.store_link import FrameLink
from server.db import pool as db_pool
from server.settings import Settings

log = logging.getLogger(__name__)

APPLICATION_NAME = "chat-server writer"  # its connections, in pg_stat_activity


class WriterLink(FrameLink):
    """One worker's link: each request is queued into the store and answered from its
    future's callback; the answers of one batch leave in one write."""

    def __init__(self, store: ChatStore) -> None:
        super().__init__()
        self.store = store

    def received(self, payload: list[Any]) -> None:
        request = wire.parse_request(payload)
        rid = request.rid
        if request.op == wire.REPLY:
            assert request.row is not None
            future = self.store.queue_reply(request.user_id, request.reply_to, request.row)
            future.add_done_callback(partial(self._replied, rid))
            return
        message, reply = self.store.queue_message(
            request.user_id,
            request.client_id,
            request.text,
            request.conversation_id,
            request.row,
        )
        # Both settle in one pass, the message first: answer when the last one does.
        last = message if reply is None else reply
        last.add_done_callback(lambda _: self._stored(rid, message, reply))

    def _stored(
        self,
        rid: int,
        message: asyncio.Future[StoredMessage],
        reply: asyncio.Future[StoredReply] | None,
    ) -> None:
        exc = message.exception()
        if exc is not None:
            self.send(wire.error_answer(rid, exc))
        else:
            self.send(wire.message_answer(rid, message.result(), reply and reply.result()))

    def _replied(self, rid: int, reply: asyncio.Future[StoredReply]) -> None:
        exc = reply.exception()
        self.send(wire.error_answer(rid, exc) if exc else wire.reply_answer(rid, reply.result()))


async def serve_writer(store: ChatStore, path: str) -> asyncio.AbstractServer:
    """Listen on the Unix socket `path` (replacing a stale one) for workers' rows."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: WriterLink(store), path)
    os.chmod(path, 0o600)  # the workers run as this user; nobody else may write rows
    return server


async def run_writer(settings: Settings, path: str) -> None:
    """The writer process: serve until SIGTERM or SIGINT, then commit what is queued.

    The supervisor stops it after the workers, which store their last replies at shutdown.
    """
    assert settings.database_url is not None  # the supervisor passes the embedded one on
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    named = {**db_pool.BATCH_SETTINGS, "application_name": APPLICATION_NAME}
    async with db_pool.open_pool(settings.database_url, 1, 2, named) as batch_pool:
        store = ChatStore(
            batch_pool,
            settings.chat_rate_per_minute,
            batch_pool,
            settings.group_commit_wait_ms / 1000,
        )
        server = await serve_writer(store, path)
        log.info("shared writer listening on %s", path)
        await stop.wait()
        server.close()
        await store.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
