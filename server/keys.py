"""Every `web.AppKey` of the app, in one place, with getters that say what is missing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from aiohttp import web

if TYPE_CHECKING:
    from server.answers.pipeline import AnswerPipeline
    from server.answers.store import LiveKnowledge
    from server.auth.passwords import PasswordHasher
    from server.auth.tokens import TokenIssuer
    from server.chat.connection import Connections
    from server.chat.deadlines import Deadlines
    from server.chat.fanout import FanOut
    from server.chat.pending_auth import PendingAuth
    from server.chat.replies import ReplyManager
    from server.db.user_reads import UserReads
    from server.jobs.purge import PurgeJob
    from server.mail import Mailer
    from server.metrics import Metrics
    from server.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
#: The batched statements' connections (generic plans): `server.db.pool.BATCH_SETTINGS`.
BATCH_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("batch_pool")
HASHER: web.AppKey[PasswordHasher] = web.AppKey("hasher")
TOKENS: web.AppKey[TokenIssuer] = web.AppKey("tokens")
MAILER: web.AppKey[Mailer] = web.AppKey("mailer")
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http")
PIPELINE: web.AppKey[AnswerPipeline] = web.AppKey("pipeline")
KNOWLEDGE: web.AppKey[LiveKnowledge] = web.AppKey("knowledge")
REPLIES: web.AppKey[ReplyManager] = web.AppKey("replies")
FANOUT: web.AppKey[FanOut] = web.AppKey("fanout")
CONNECTIONS: web.AppKey[Connections] = web.AppKey("connections")
DEADLINES: web.AppKey[Deadlines] = web.AppKey("deadlines")  # every socket's ping and expiry
PENDING_AUTH: web.AppKey[PendingAuth] = web.AppKey("pending_auth")
PURGE: web.AppKey[PurgeJob] = web.AppKey("purge")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
#: Users read in batches (every token check): `server.db.user_reads`.
USERS: web.AppKey[UserReads] = web.AppKey("users")
#: Migration 0008's backfill of earlier history into conversations, running at start-up.
BACKFILL: web.AppKey[asyncio.Task[None]] = web.AppKey("backfill")
DSN: web.AppKey[str] = web.AppKey("dsn")  # the database URL in use (embedded or given)
#: Set once shutdown begins: /readyz answers 503, new WebSockets and messages are refused.
SHUTDOWN: web.AppKey[asyncio.Event] = web.AppKey("shutdown")


def get(app: web.Application, key: web.AppKey[Any]) -> Any:
    """`app[key]`, or a RuntimeError naming the cleanup context that should have set it."""
    try:
        return app[key]
    except KeyError:
        raise RuntimeError(
            f"app[{key.name!r}] is not set: is its cleanup context in create_app()?"
        ) from None
