"""The chat inside the app: store → connections → fan-out → replies, and the WebSocket route."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from protocol import CloseCode
from server import keys
from server.chat.channel import chat_ws
from server.chat.connection import Connections
from server.chat.deadlines import Deadlines
from server.chat.fanout import FanOut, Outbox
from server.chat.pending_auth import PendingAuth
from server.chat.replies import ReplyManager
from server.chat.store import ChatStore
from server.chat.store_link import LinkedStore
from server.fanout.backend import transport


async def chat_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = app[keys.POOL]
    store: ChatStore | LinkedStore = ChatStore(
        pool,
        settings.chat_rate_per_minute,
        app[keys.BATCH_POOL],
        settings.group_commit_wait_ms / 1000,
    )
    if settings.chat_writer_socket:  # a worker beside the shared writer (run_server.py)
        store = LinkedStore(store, settings.chat_writer_socket)
        store.start()
    metrics = app[keys.METRICS]
    connections = Connections(metrics.connections)
    backend = transport(settings.fanout_url, app[keys.DSN], pool)
    backend.listening.watch(metrics.fanout_connected.set)
    outbox = Outbox(backend)
    # The mock without a token delay answers at once (benchmarks, tests): a REST
    # question and its reply are then stored in one commit.
    instant = not settings.uses_llm_api and settings.llm_token_delay_ms == 0
    replies = ReplyManager(
        store, app[keys.PIPELINE], connections, outbox, app[keys.SHUTDOWN], metrics, instant
    )
    fanout = FanOut(backend, outbox, replies)
    app[keys.REPLIES] = replies
    app[keys.CONNECTIONS] = connections
    app[keys.DEADLINES] = deadlines = Deadlines()
    app[keys.FANOUT] = fanout
    await fanout.start()
    yield
    # on_shutdown has already stored the replies and closed the sockets.
    await replies.close(0)
    await store.close()
    await fanout.close()
    deadlines.close()


async def drain_chat(app: web.Application) -> None:
    """New messages are refused; the replies in flight get SHUTDOWN_TIMEOUT_S to finish,
    then are stopped and stored. A second call finds nothing left to wait for."""
    app[keys.SHUTDOWN].set()
    if keys.REPLIES not in app:  # absent when start-up failed
        return
    await app[keys.REPLIES].close(app[keys.SETTINGS].shutdown_timeout_s)


async def shutdown_chat(app: web.Application) -> None:
    """In-flight replies are stored first; then every socket is told the server goes away."""
    await drain_chat(app)
    if keys.CONNECTIONS not in app:
        return
    connections = list(app[keys.CONNECTIONS])
    for conn in connections:
        conn.close_soon(CloseCode.GOING_AWAY, "server shutting down")
    for conn in connections:
        await conn.flush()


def setup_chat(app: web.Application) -> None:
    """The WebSocket route, the shutdown step and the bound on sockets waiting for `auth`
    (`chat_context` and `revocation_context` are listed in create_app)."""
    settings = app[keys.SETTINGS]
    app[keys.PENDING_AUTH] = PendingAuth(
        settings.ws_pending_auth_per_address, settings.ws_pending_auth_max
    )
    app.on_shutdown.append(shutdown_chat)
    app.router.add_get("/api/v1/chat/ws", chat_ws)
