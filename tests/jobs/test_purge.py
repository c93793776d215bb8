"""The history purge job: what it deletes, its schedule, its lock, its failures."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import timedelta
from typing import Any

from server import keys
from server.app import create_app
from server.jobs.purge import PURGE_LOCK, PurgeJob
from tests.accounts import signup, unique_email
from tests.jobs.history_rows import (
    DAY,
    NEW,
    OLD,
    add_row,
    connector,
    row_ids,
    wait_for,
)


async def test_purge_deletes_rows_older_than_retention_by_exact_age(client, db):
    _, _, alice = await signup(client)
    _, _, bob = await signup(client)
    old = {await add_row(db, alice, OLD), await add_row(db, alice, 30 * DAY + timedelta(minutes=1))}
    kept = {
        await add_row(db, alice, 29 * DAY + timedelta(hours=23)),
        await add_row(db, alice, NEW),
    }
    bobs = {await add_row(db, bob, 29 * DAY), await add_row(db, bob, NEW)}

    result = await client.app[keys.PURGE].run_once()

    assert result.status == "ok"
    assert result.error is None
    assert result.deleted >= len(old)
    assert await row_ids(db, alice) == kept
    assert await row_ids(db, bob) == bobs
    assert client.app[keys.PURGE].last_run == result


async def test_purge_takes_the_replies_of_purged_messages_along(client, db):
    _, _, user_id = await signup(client)
    message = await add_row(db, user_id, OLD)
    await add_row(db, user_id, 29 * DAY, reply_to=message)  # a reply stored a day later
    newer = await add_row(db, user_id, NEW)

    result = await client.app[keys.PURGE].run_once()

    assert result.status == "ok"
    assert await row_ids(db, user_id) == {newer}


async def test_purge_works_through_a_backlog_in_batches(client, db, database_url):
    _, _, user_id = await signup(client)
    await db.execute(
        'INSERT INTO chat_history (user_id, message, is_user_message, "timestamp")'
        " SELECT $1, 'old', true, now() - interval '40 days' - g * interval '1 second'"
        " FROM generate_series(1, 23) g",
        user_id,
    )
    newer = await add_row(db, user_id, NEW)
    job = PurgeJob(connector(database_url), retention_days=30, batch_size=5)

    result = await job.run_once()

    assert result.status == "ok"
    assert result.deleted >= 23
    assert await row_ids(db, user_id) == {newer}


async def test_purge_removes_expired_verifications_and_stale_rate_limits(client, db):
    _, _, user_id = await signup(client)
    key = f"test:{unique_email()}"
    await db.executemany(
        "INSERT INTO email_verifications (jti, user_id, expires_at, used_at)"
        " VALUES ($1, $2, now() + $3::interval, CASE WHEN $4 THEN now() END)",
        [
            (f"{key}:expired", user_id, -NEW, False),
            (f"{key}:used", user_id, DAY, True),
            (f"{key}:live", user_id, DAY, False),
        ],
    )
    await db.executemany(
        "INSERT INTO rate_limits (key, window_start, hits) VALUES ($1, now() - $2::interval, 1)",
        [(key, 2 * NEW), (key, timedelta(minutes=1))],
    )

    result = await client.app[keys.PURGE].run_once()

    assert result.status == "ok"
    assert result.deleted_other >= 3
    jtis = await db.fetch("SELECT jti FROM email_verifications WHERE jti LIKE $1", f"{key}:%")
    assert [r["jti"] for r in jtis] == [f"{key}:live"]
    windows = await db.fetchval("SELECT count(*) FROM rate_limits WHERE key = $1", key)
    assert windows == 1


async def test_the_cron_schedule_really_runs_the_purge(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(purge_cron="* * * * * *")))
    _, _, user_id = await signup(client)
    old = await add_row(db, user_id, OLD)
    job = client.app[keys.PURGE]

    await wait_for(lambda: job.runs >= 1, 3)
    first = job.last_run
    await wait_for(lambda: job.runs >= 2, 3)

    assert first is not None and first.status == "ok"
    assert job.last_run is not None and job.last_run.started_at > first.started_at
    assert old not in await row_ids(db, user_id)


async def test_a_failing_run_is_logged_and_the_next_one_still_happens(
    client, db, database_url, caplog
):
    _, _, user_id = await signup(client)
    real = connector(database_url)
    calls = itertools.count()

    def flaky() -> Any:
        if next(calls) == 0:
            raise ConnectionRefusedError("database is away")
        return real()

    old = await add_row(db, user_id, OLD)
    job = PurgeJob(flaky, retention_days=30)
    caplog.set_level(logging.INFO, logger="server.jobs")
    job.start("* * * * * *")
    try:
        await wait_for(lambda: job.runs >= 2, 4)
    finally:
        await job.stop()

    failures = [r for r in caplog.records if r.message.startswith("purge failed")]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None  # the traceback is logged, not lost
    assert job.last_run is not None and job.last_run.status == "ok"
    assert old not in await row_ids(db, user_id)


async def test_stop_cancels_a_run_that_outlasts_the_grace_period(client, db, database_url):
    _, _, user_id = await signup(client)
    for _ in range(20):
        await add_row(db, user_id, OLD)
    job = PurgeJob(connector(database_url), 30, batch_size=1, batch_pause_s=0.1)
    job.start("0 0 1 1 *")  # never fires during the test
    run = asyncio.create_task(job.run_now())
    await wait_for(lambda: job.running, 1)
    await asyncio.sleep(0.3)

    await job.stop(grace_s=0.1)

    assert run.cancelled()
    assert not job.running
    assert job.last_run is not None and job.last_run.status == "error"
    assert job.last_run.error == "cancelled"
    # The lock went with the cancelled run: the next run is not skipped.
    after = await PurgeJob(connector(database_url), 30).run_once()
    assert after.status == "ok"
    assert await row_ids(db, user_id) == set()


async def test_a_run_skips_while_another_instance_holds_the_lock(client, db, caplog):
    _, _, user_id = await signup(client)
    old = await add_row(db, user_id, OLD)
    job = client.app[keys.PURGE]
    caplog.set_level(logging.INFO, logger="server.jobs")

    assert await db.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK)
    try:
        skipped = await job.run_once()
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK)

    assert skipped.status == "skipped"
    assert skipped.deleted == 0
    assert "purge skipped: another instance is running it" in caplog.messages
    assert old in await row_ids(db, user_id)
    assert (await job.run_once()).status == "ok"
    assert old not in await row_ids(db, user_id)


async def test_two_purges_at_once_one_runs_one_skips(client, db, database_url):
    _, _, user_id = await signup(client)
    for _ in range(5):
        await add_row(db, user_id, OLD)
    slow = dict(batch_size=1, batch_pause_s=0.1)
    one = PurgeJob(connector(database_url), 30, **slow)
    other = PurgeJob(connector(database_url), 30, **slow)

    results = await asyncio.gather(one.run_once(), other.run_once())

    assert sorted(r.status for r in results) == ["ok", "skipped"]
    assert sum(r.deleted for r in results) >= 5
    assert await row_ids(db, user_id) == set()
