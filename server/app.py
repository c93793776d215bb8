"""The app factory: settings in, a wired `web.Application` out.

Resources open and close in cleanup contexts, listed once in `create_app` in
the order they start: password hasher → database → HTTP client → mail →
answer pipeline → chat (store, connections, fan-out, replies) → purge. Shutdown
runs them backwards, after the WebSockets are told to go away.
`begin_shutdown` is shutdown's first step, taken by `run_server` while the
server still listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from aiohttp import web

from server import keys
from server.auth.passwords import PasswordHasher
from server.auth.tokens import TokenIssuer
from server.db import conversations
from server.db import pool as db_pool
from server.db.migrations import migrate
from server.db.user_reads import UserReads
from server.logs import request_id_middleware
from server.mail import Mailer
from server.metrics import Metrics, metrics_middleware
from server.metrics import setup as setup_metrics
from server.middlewares import error_middleware, hide_server_version, response_headers
from server.settings import Settings

log = logging.getLogger(__name__)


async def database_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with AsyncExitStack() as stack:
        dsn = settings.database_url
        if dsn is None:  # stopped after the pool closes, when this server started it
            dsn = await stack.enter_async_context(db_pool.embedded_postgres_async(settings.var_dir))
            log.info("using the embedded PostgreSQL in %s", settings.var_dir / "pgdata")
        pool = await stack.enter_async_context(
            db_pool.open_pool(dsn, settings.db_pool_min, settings.db_pool_max)
        )
        async with pool.acquire() as conn:
            await migrate(conn)
        # One connection for each batch loop: the group commit's, the user reads'.
        batch_pool = await stack.enter_async_context(
            db_pool.open_pool(dsn, 1, 2, db_pool.BATCH_SETTINGS)
        )
        app[keys.POOL] = pool
        app[keys.BATCH_POOL] = batch_pool
        app[keys.USERS] = UserReads(batch_pool)
        app[keys.DSN] = dsn
        # Migration 0008's second half, in batches while chat goes on.
        app[keys.BACKFILL] = asyncio.create_task(backfill_conversations(pool), name="backfill")
        try:
            yield
        finally:
            app[keys.BACKFILL].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app[keys.BACKFILL]


async def backfill_conversations(pool) -> None:
    try:
        await conversations.backfill(pool)
    except Exception:
        log.exception("backfill of conversations failed; the next start-up tries again")


async def http_client_context(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[keys.HTTP] = session
        yield


async def mail_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    mailer = Mailer(settings.smtp_url, settings.mail_from)
    app[keys.MAILER] = mailer
    yield
    await mailer.drain()


async def hasher_context(app: web.Application) -> AsyncIterator[None]:
    yield
    app[keys.HASHER].close()


async def begin_shutdown(app: web.Application) -> None:
    """Shutdown's first step, while the port still accepts connections: `/readyz` answers
    503 and new WebSockets are refused at once, and the replies in flight get up to
    SHUTDOWN_TIMEOUT_S to finish (then they are stopped and stored). The listener closes
    after this; on_shutdown then tells the WebSockets to go away (1001)."""
    from server.chat.setup import drain_chat

    await drain_chat(app)


def create_app(settings: Settings) -> web.Application:
    from server import docs, health
    from server.answers.setup import answers_context, setup_answers
    from server.auth.views import routes as auth_routes
    from server.chat.conversation_views import routes as conversation_routes
    from server.chat.revocation import revocation_context
    from server.chat.setup import chat_context, setup_chat
    from server.console import setup_console
    from server.feedback import routes as feedback_routes
    from server.jobs.views import purge_context, setup_jobs
    from server.operators import routes as operator_routes
    from server.static import setup_static
    from server.web import routes as chat_routes

    if not settings.secret_key:
        settings = settings.with_secret()
    metrics = Metrics()
    app = web.Application(
        # The metrics see each request's final status: errors are answered inside them.
        middlewares=[request_id_middleware, metrics_middleware(metrics), error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.SHUTDOWN] = asyncio.Event()
    app[keys.HASHER] = PasswordHasher(settings.bcrypt_rounds)
    app[keys.TOKENS] = TokenIssuer(
        settings.secret_key,
        settings.algorithm,
        settings.access_token_expire_minutes * 60,
        settings.verify_token_expire_hours * 3600,
    )
    # The start-up order, top to bottom; shutdown leaves them bottom to top.
    app.cleanup_ctx.append(
        all_or_nothing(
            [
                hasher_context,  # bcrypt's worker threads
                database_context,  # the pool, after the migrations
                http_client_context,  # outgoing HTTP: the LLM provider
                mail_context,  # verification mails, sent in the background
                answers_context,  # knowledge base and retriever (database, HTTP)
                chat_context,  # store → connections → fan-out → replies (answers)
                revocation_context,  # closes the sockets of revoked users (connections)
                purge_context,  # the purge's schedule (database)
            ]
        )
    )
    # Routes and handlers; none of them opens a resource.
    app.add_routes(auth_routes)
    app.add_routes(chat_routes)
    app.add_routes(feedback_routes)
    app.add_routes(operator_routes)
    app.add_routes(conversation_routes)
    setup_answers(app)
    setup_chat(app)
    setup_jobs(app)
    app.on_response_prepare.append(response_headers)
    hide_server_version()
    health.setup(app)
    setup_metrics(app, metrics)
    docs.setup(app)
    setup_static(app)
    setup_console(app)
    return app


def all_or_nothing(contexts: list[Callable[[web.Application], AsyncIterator[None]]]):
    """One cleanup context that enters `contexts` in order and leaves them backwards.

    If one fails to start (a bad knowledge file, say), those already started are
    closed before the error propagates: aiohttp's runner does not clean up after
    a failed start-up, which would leave the pool and its tasks dangling.
    """

    async def run(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for context in contexts:
                await stack.enter_async_context(asynccontextmanager(context)(app))
            yield

    return run
