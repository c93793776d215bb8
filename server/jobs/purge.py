"""The history purge: delete chat rows older than HISTORY_RETENTION_DAYS, on PURGE_CRON.

One run, under a PostgreSQL advisory lock held on one dedicated connection:

1. `pg_try_advisory_lock(PURGE_LOCK)`; if another instance holds it, the run is
   recorded as skipped and logged ("purge skipped: another instance is running it").
2. The cutoff is computed once, `now() - n * 24 hours` (exact age, whatever the
   session's time zone), so a long run does not chase a moving target.
3. chat_history is partitioned by day (`server.db.partitions`): the partitions
   of today and the week ahead are made when missing; every partition entirely
   older than the cutoff is detached (all in one short transaction), to be
   emptied and dropped after step 4 with the younger replies of its messages in
   later partitions (`server.db.partition_purge`).
4. The rest by exact age: in the partition straddling the cutoff, and in the
   DEFAULT partition (rows no partition covered, e.g. imported with old
   timestamps), rows older than the cutoff go in batches of `batch_size`, oldest
   first through the `chat_history_timestamp` index, each batch one autocommit
   statement: no long locks, no huge transaction, and the event loop gets a
   turn between batches. The replies of the messages purged go with them,
   younger or not; counts are rows deleted. Then the detached partitions are
   emptied and dropped, and the keys of the two guarantees (`chat_keys`) of every
   message older than the cutoff deleted, in one statement.
5. Other dead rows: used or expired verification links, rate-limit windows
   older than an hour, guests with no message since the cutoff (and everything
   of theirs).

The schedule (aiocron, UTC) only starts runs; every error is caught and logged
inside the run, so aiocron never swallows it in a done-callback and the next
tick still happens. Its SQL is in `server.db.purge`; its admin endpoints and
cleanup context in `server.jobs.views`; `python run_server.py purge` runs it
once (`server.jobs.cli`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiocron
import asyncpg
from prometheus_client import Counter

from server.db import partition_purge, partitions
from server.db import purge as purge_sql

log = logging.getLogger(__name__)

PURGE_LOCK = 0x7075726765  # "purge": the advisory lock key; one instance purges at a time
RATE_LIMIT_KEEP_HOURS = 1  # no rate-limit window is longer than this
STOP_TIMEOUT_S = 5.0  # how long shutdown waits for a run in progress before cancelling it

Status = Literal["ok", "skipped", "error"]
# Opens the run's one connection: `pool.acquire` in the app, a stand-in in tests.
Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


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
        deleted_rows: Counter | None = None,
    ) -> None:
        if retention_days < 1 or batch_size < 1:
            raise ValueError("retention_days and batch_size must be at least 1")
        self.connect = connect
        self.retention_days = retention_days
        self.batch_size = batch_size
        self.batch_pause_s = batch_pause_s
        self.deleted_rows = deleted_rows  # purge_deleted_rows_total, when serving
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
            if not await purge_sql.try_lock(conn, PURGE_LOCK):
                return "skipped", None
            try:
                cutoff = await purge_sql.cutoff(conn, self.retention_days)
                await partitions.ensure_ahead(conn)
                await partition_purge.detach(
                    conn, partitions.past_retention(await partitions.list_partitions(conn), cutoff)
                )
                while True:
                    deleted, replies = await purge_sql.delete_history_batch(
                        conn, cutoff, self.batch_size
                    )
                    counts[0] += deleted + replies
                    if deleted < self.batch_size:
                        break
                    await asyncio.sleep(self.batch_pause_s)
                names = await partition_purge.detached(conn)  # an earlier run's too
                counts[0] += await partition_purge.delete_younger_replies(conn, names)
                counts[0] += await partition_purge.empty(conn, names)
                await partition_purge.drop_tables(conn, names)
                # Every message older than the cutoff is out of chat_history by now.
                await partitions.forget_keys(conn, cutoff)
                counts[1] += await purge_sql.delete_other(conn, cutoff, RATE_LIMIT_KEEP_HOURS)
                finished_at = started_at + timedelta(seconds=time.monotonic() - clock)
                await purge_sql.record_run(conn, started_at, finished_at, *counts)
            finally:
                await _unlock(conn)
        return "ok", finished_at

    async def newest_ok(self) -> PurgeResult | None:
        """The newest successful run of any instance (this one's, if the database is away)."""
        try:
            async with self.connect() as conn:
                row = await purge_sql.newest_run(conn)
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
        if self.deleted_rows is not None:  # a failed run's batches were committed too
            self.deleted_rows.inc(result.deleted)
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
        await purge_sql.unlock(conn, PURGE_LOCK)
    except Exception:
        log.warning("could not release the purge lock; closing the connection", exc_info=True)
        conn.terminate()
