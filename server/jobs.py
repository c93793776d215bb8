"""The history purge: delete chat rows older than HISTORY_RETENTION_DAYS, on PURGE_CRON.

One run, under a PostgreSQL advisory lock held on one dedicated connection:

1. `pg_try_advisory_lock(PURGE_LOCK)`; if another instance holds it, the run is
   recorded as skipped and logged ("purge skipped: another instance is running it").
2. The cutoff is computed once, `now() - n * 24 hours` (exact age, whatever the
   session's time zone), so a long run does not chase a moving target.
3. History rows older than the cutoff go in batches of `batch_size`, oldest
   first through the `chat_history_timestamp` index, each batch one autocommit
   statement: a backlog of millions never holds long locks or one huge
   transaction, and the event loop gets a turn between batches. The replies of
   the messages purged go with them, younger or not; counts are rows deleted.
4. Other dead rows: used or expired verification links, rate-limit windows
   older than an hour.

The schedule (aiocron, UTC) only starts runs; every error is caught and logged
inside the run, so aiocron never swallows it in a done-callback and the next
tick still happens. `python run_server.py purge` runs it once (`purge_from_cli`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiocron
import asyncpg
from aiohttp import web
from cronsim import CronSim

from server import keys
from server.auth.guards import require_admin
from server.http import json_response
from server.settings import Settings

log = logging.getLogger(__name__)

PURGE_LOCK = 0x7075726765  # "purge": the advisory lock key; one instance purges at a time
RATE_LIMIT_KEEP_HOURS = 1  # no rate-limit window is longer than this
STOP_TIMEOUT_S = 5.0  # how long shutdown waits for a run in progress before cancelling it

Status = Literal["ok", "skipped", "error"]
# Opens the run's one connection: `pool.acquire` in the app, a stand-in in tests.
Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]

_CUTOFF = "SELECT now() - make_interval(hours => $1 * 24)"
# One batch of old rows, and the replies of the messages among them even where a reply is
# younger than the cutoff (it would otherwise outlive its message). Returns (old, replies).
_DELETE_HISTORY_BATCH = """
WITH old AS (
    DELETE FROM chat_history WHERE id IN (
        SELECT id FROM chat_history WHERE "timestamp" < $1 ORDER BY "timestamp" LIMIT $2)
    RETURNING id, is_user_message
), replies AS (
    DELETE FROM chat_history
    WHERE reply_to IN (SELECT id FROM old WHERE is_user_message) AND "timestamp" >= $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM replies)
"""
_DELETE_OTHER = (
    "DELETE FROM email_verifications WHERE used_at IS NOT NULL OR expires_at < now()",
    "DELETE FROM rate_limits WHERE window_start < now() - make_interval(hours => $1)",
    "DELETE FROM purge_runs WHERE finished_at < $1",
)
_RECORD_RUN = (
    "INSERT INTO purge_runs (started_at, finished_at, deleted, deleted_other)"
    " VALUES ($1, $2, $3, $4)"
)
_LAST_OK = (
    "SELECT started_at, finished_at, deleted, deleted_other FROM purge_runs"
    " ORDER BY finished_at DESC LIMIT 1"
)


def _count(status: str) -> int:
    """The row count of a command status such as 'DELETE 5000'."""
    return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What one run did; `deleted` counts history rows, `deleted_other` the rest."""

    started_at: datetime
    finished_at: datetime
    status: Status
    deleted: int = 0
    deleted_other: int = 0
    error: str | None = None

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def as_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "deleted": self.deleted,
            "deleted_other": self.deleted_other,
            "duration_s": round(self.duration_s, 3),
            "status": self.status,
            "error": self.error,
        }


class PurgeJob:
    """Runs the purge once (`run_once`) or on a cron schedule (`start` / `stop`).

    Args:
        connect: opens the one connection a run holds from start to end (the
            advisory lock is session-level, so it must be the same connection).
        retention_days: rows older than this many days, by exact age, go.
        batch_size: history rows per DELETE statement (one transaction each).
        batch_pause_s: sleep between batches, to leave the database to chat
            traffic on a busy server; 0 only yields to the event loop.
    """

    def __init__(
        self,
        connect: Connect,
        retention_days: int,
        batch_size: int = 5000,
        *,
        batch_pause_s: float = 0.0,
    ) -> None:
        if retention_days < 1 or batch_size < 1:
            raise ValueError("retention_days and batch_size must be at least 1")
        self.connect = connect
        self.retention_days = retention_days
        self.batch_size = batch_size
        self.batch_pause_s = batch_pause_s
        self.last_run: PurgeResult | None = None
        self.last_ok: PurgeResult | None = None
        self.runs = 0
        self._cron: aiocron.Cron | None = None
        self._tasks: set[asyncio.Task[PurgeResult]] = set()

    # -- one run ---------------------------------------------------------------------

    async def run_once(self) -> PurgeResult:
        """Purge now; never raises (errors are logged and returned as status 'error')."""
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        counts = [0, 0]
        try:
            status, finished_at = await self._purge(counts, started_at, clock)
        except asyncio.CancelledError:
            log.warning("purge cancelled after %d history rows", counts[0])
            self._record(started_at, clock, "error", counts, "cancelled")
            raise
        except Exception as exc:
            log.exception("purge failed after %d history rows", counts[0])
            return self._record(started_at, clock, "error", counts, f"{type(exc).__name__}: {exc}")
        result = self._record(started_at, clock, status, counts, None, finished_at)
        if status == "skipped":
            log.info("purge skipped: another instance is running it")
        else:
            log.info(
                "purged %d history rows (%d other) in %.3f s",
                result.deleted,
                result.deleted_other,
                result.duration_s,
            )
        return result

    async def _purge(
        self, counts: list[int], started_at: datetime, clock: float
    ) -> tuple[Status, datetime | None]:
        """Purge under the lock; the status, and when an 'ok' run finished (as recorded)."""
        async with self.connect() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK):
                return "skipped", None
            try:
                cutoff = await conn.fetchval(_CUTOFF, self.retention_days)
                while True:
                    deleted, replies = await conn.fetchrow(
                        _DELETE_HISTORY_BATCH, cutoff, self.batch_size
                    )
                    counts[0] += deleted + replies
                    if deleted < self.batch_size:
                        break
                    await asyncio.sleep(self.batch_pause_s)
                verifications, rate_limits, runs = _DELETE_OTHER
                counts[1] += _count(await conn.execute(verifications))
                counts[1] += _count(await conn.execute(rate_limits, RATE_LIMIT_KEEP_HOURS))
                counts[1] += _count(await conn.execute(runs, cutoff))
                finished_at = started_at + timedelta(seconds=time.monotonic() - clock)
                await conn.execute(_RECORD_RUN, started_at, finished_at, *counts)
            finally:
                await _unlock(conn)
        return "ok", finished_at

    async def newest_ok(self) -> PurgeResult | None:
        """The newest successful run of any instance (this one's, if the database is away)."""
        try:
            async with self.connect() as conn:
                row = await conn.fetchrow(_LAST_OK)
        except Exception as exc:
            log.warning("could not read the purge runs: %s", exc)
            return self.last_ok
        if row is None:
            return None
        return PurgeResult(
            row["started_at"], row["finished_at"], "ok", row["deleted"], row["deleted_other"]
        )

    def _record(
        self,
        started_at: datetime,
        clock: float,
        status: Status,
        counts: list[int],
        error: str | None,
        finished_at: datetime | None = None,
    ) -> PurgeResult:
        if finished_at is None:
            finished_at = started_at + timedelta(seconds=time.monotonic() - clock)
        result = PurgeResult(started_at, finished_at, status, counts[0], counts[1], error)
        self.last_run = result
        self.runs += 1
        if status == "ok":
            self.last_ok = result
        return result

    # -- the schedule ----------------------------------------------------------------

    def start(self, spec: str) -> None:
        """Run on `spec` (aiocron syntax, UTC); call from inside the running loop."""
        self._cron = aiocron.crontab(
            spec, func=self._tick, start=False, loop=asyncio.get_running_loop(), tz=UTC
        )
        self._cron.start()

    @property
    def running(self) -> bool:
        """A run started by the schedule or `run_now` is in progress in this process."""
        return bool(self._tasks)

    def _tick(self) -> None:
        # Called by aiocron: start the run in a task of our own, so shutdown can
        # wait for it or cancel it, and aiocron's own future always succeeds.
        if self._tasks:
            log.warning("purge skipped: the previous run is still going")
            return
        self._spawn()

    async def run_now(self) -> PurgeResult:
        """Run once now, as a tracked run that shutdown waits for."""
        return await asyncio.shield(self._spawn())

    def _spawn(self) -> asyncio.Task[PurgeResult]:
        task = asyncio.create_task(self.run_once(), name="purge")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the schedule; wait up to `grace_s` for a run in progress, then cancel it."""
        if self._cron is not None:
            self._cron.stop()
            self._cron = None
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        if pending:
            log.warning("purge still running after %.1f s at shutdown: cancelling it", grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _unlock(conn: asyncpg.Connection) -> None:
    # After a cancelled query the connection may refuse more work; closing it
    # (the pool does on release) ends the session, and with it the lock.
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK)
    except Exception:
        log.warning("could not release the purge lock; closing the connection", exc_info=True)
        conn.terminate()


# -- the app: cleanup context and admin endpoint ---------------------------------------


async def purge_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    job = PurgeJob(
        app[keys.POOL].acquire, settings.history_retention_days, settings.purge_batch_size
    )
    app[keys.PURGE] = job
    job.start(settings.purge_cron)
    yield
    await job.stop()


def _next_run(spec: str) -> datetime | None:
    try:
        return next(CronSim(spec, datetime.now(UTC)))
    except Exception:  # the schedule was validated at start-up; this is only a hint
        return None


async def purge_status(request: web.Request) -> web.Response:
    """GET /api/v1/admin/purge: this instance's last run, the newest successful run of any
    instance, the schedule and the retention."""
    await require_admin(request)
    settings = request.app[keys.SETTINGS]
    job = keys.get(request.app, keys.PURGE)
    last_ok = await job.newest_ok()
    return json_response(
        {
            "last_run": job.last_run.as_json() if job.last_run else None,
            "last_ok": last_ok.as_json() if last_ok else None,
            "schedule": settings.purge_cron,
            "next_run": _next_run(settings.purge_cron),
            "retention_days": settings.history_retention_days,
        }
    )


async def purge_now(request: web.Request) -> web.Response:
    """POST /api/v1/admin/purge: run the purge now and answer with its result."""
    await require_admin(request)
    result = await keys.get(request.app, keys.PURGE).run_now()
    return json_response(result.as_json())


def setup_jobs(app: web.Application) -> None:
    """Append the purge's cleanup context (after the database's) and its admin routes."""
    app.cleanup_ctx.append(purge_context)
    app.router.add_get("/api/v1/admin/purge", purge_status)
    app.router.add_post("/api/v1/admin/purge", purge_now)


# -- the command line ------------------------------------------------------------------


async def purge_from_cli(settings: Settings) -> int:
    """`python run_server.py purge`: one run on a pool of its own; the exit status.

    0 when the run purged or another instance was already purging (skipped),
    1 when it failed. The result is printed as one line of JSON.
    """
    from server.db import pool as db_pool
    from server.db.migrations import migrate
    from server.http import dumps

    async with AsyncExitStack() as stack:
        dsn = settings.database_url
        if dsn is None:
            dsn = await stack.enter_async_context(db_pool.embedded_postgres_async(settings.var_dir))
        pool = await stack.enter_async_context(db_pool.open_pool(dsn, 1, 1))
        async with pool.acquire() as conn:
            await migrate(conn)
        job = PurgeJob(pool.acquire, settings.history_retention_days, settings.purge_batch_size)
        result = await job.run_once()
    print(dumps(result.as_json()).decode(), flush=True)
    return 1 if result.status == "error" else 0
