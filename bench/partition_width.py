"""Daily or monthly partitions of chat_history: what each costs chat, and the purge of a day.

    DATABASE_URL=postgresql://user@host/postgres python bench/partition_width.py
        [--rows 300000] [--users 1000] [--rounds 3]

Two throwaway databases migrated by the server (chat_history partitioned by day, 8 days
ahead made), one of them then laid out by month instead (the same rows: the daily
partitions dropped, one partition a calendar month). Both get the same rows: `--rows`
history rows (questions with client ids and their replies; chat_keys by its trigger)
spread over the last 31 days and `--users` users. Then, alternating between the two
layouts round by round, on one connection each, wall-clock time per call of:

- the group commit's INSERT_BATCH (`server.db.group_commit`) of 100 messages and their
  100 replies (two statements), per message;
- a user's newest history page (`server.db.queries.history`, 50 rows; it cannot prune);
- a row by id (`server.db.queries.message_text`; it cannot prune);
- the purge of one day past retention: DROP of a daily partition (with the younger
  replies and keys, `server.db.partitions`), against deleting that day's rows by exact
  age from a monthly partition (the purge's own batch statement, batches of 5,000).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import admin_url, load, machine
from server.db import group_commit, migrations, partitions, queries, scratch
from server.db import purge as purge_sql

DAYS = 31


async def monthly(conn: asyncpg.Connection) -> None:
    """Replace the daily partitions by one a calendar month over the same range."""
    now = await conn.fetchval("SELECT now()")
    for p in await partitions.list_partitions(conn):
        if not p.is_default:
            await conn.execute(f"DROP TABLE {p.name}")
    first = partitions.day_start(now - timedelta(days=DAYS + 31)).replace(day=1)
    last = now + timedelta(days=partitions.AHEAD_DAYS + 1)
    while first <= last:
        nxt = (first + timedelta(days=32)).replace(day=1)
        await conn.execute(
            f"CREATE TABLE chat_history_m{first:%Y%m} PARTITION OF chat_history"
            f" FOR VALUES FROM ('{first.isoformat()}') TO ('{nxt.isoformat()}')"
        )
        first = nxt


async def fill(conn: asyncpg.Connection, rows: int, users: int, daily: bool) -> list[int]:
    """The users, and `rows` rows over the last DAYS days (days past the partitions made
    ahead get theirs first, as a server running all along would have made them)."""
    now = await conn.fetchval("SELECT now()")
    if daily:
        day = partitions.day_start(now - timedelta(days=DAYS + 1))
        while day < partitions.day_start(now):
            await partitions.create_partition(conn, day)
            day += partitions.DAY
    ids = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO users (email, hashed_password) SELECT 'u' || g || '@e.com', 'x'"
            " FROM generate_series(1, $1) g RETURNING id",
            users,
        )
    ]
    base = await conn.fetchval("SELECT nextval('chat_history_id_seq')")
    await conn.execute("SELECT setval('chat_history_id_seq', $1)", base + rows)
    await conn.execute(
        "INSERT INTO chat_history (id, user_id, message, is_user_message, client_id, reply_to,"
        ' "timestamp")'
        " SELECT $1 + g, ($2::bigint[])[1 + (g / 2) % array_length($2::bigint[], 1)],"
        "  'message ' || g, g % 2 = 1, CASE WHEN g % 2 = 1 THEN 'c' || g END,"
        "  CASE WHEN g % 2 = 0 THEN $1 + g - 1 END,"
        "  $4::timestamptz - ($3 - g) * ($5::interval / $3)"
        " FROM generate_series(1, $3) g",
        base,
        ids,
        rows,
        now,
        timedelta(days=DAYS),
    )
    await conn.execute("VACUUM ANALYZE")
    return ids


async def timed(call: Callable[[], Awaitable[object]], n: int) -> float:
    """Median wall-clock µs of `call` over `n` runs."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


async def measure(conn: asyncpg.Connection, ids: list[int], rnd: int) -> dict[str, float]:
    batch = 100
    tag = f"r{rnd}-{time.monotonic_ns()}"
    counter = iter(range(10**9))

    async def insert() -> None:
        k = next(counter)
        users = [ids[(k * batch + i) % len(ids)] for i in range(batch)]
        clients = [f"{tag}-{k}-{i}" for i in range(batch)]
        rows = await group_commit.insert_batch(
            conn, users, ["q"] * batch, clients, [], [], [], [], [], [], [None] * batch
        )
        messages = [r["id"] for r in rows]
        await group_commit.insert_batch(
            conn,
            [],
            [],
            [],
            users,
            ["a reply"] * batch,
            messages,
            ["stop"] * batch,
            ["[]"] * batch,
            ["{1}"] * batch,
            [],
        )

    newest = await conn.fetchval("SELECT max(id) FROM chat_history")
    out = {
        "insert_us_per_message": await timed(insert, 20) / batch,
        "history_page_us": await timed(lambda: queries.history(conn, ids[rnd], 50, None), 200),
        "row_by_id_us": await timed(lambda: queries.message_text(conn, newest - 7), 200),
    }
    return out


async def purge_a_day(conn: asyncpg.Connection, daily: bool) -> tuple[float, int]:
    """The purge of the oldest day: seconds, and rows deleted."""
    first = await conn.fetchval('SELECT min("timestamp") FROM chat_history')
    day = partitions.day_start(first)
    t0 = time.perf_counter()
    if daily:
        found = await partitions.list_partitions(conn)
        part = next(p for p in found if p.lo == day)
        deleted = await partitions.drop_partition(conn, part)
    else:
        deleted = 0
        while True:
            old, replies = await purge_sql.delete_history_batch(conn, day + partitions.DAY, 5000)
            deleted += old + replies
            if old < 5000:
                break
    await partitions.forget_keys(conn, day + partitions.DAY)
    return time.perf_counter() - t0, deleted


async def main_async(args: argparse.Namespace) -> None:
    admin = admin_url()
    layouts = {"daily": True, "monthly": False}
    urls = {name: await scratch.create_database(admin, "chat_width") for name in layouts}
    conns = {}
    try:
        for name, daily in layouts.items():
            conn = conns[name] = await asyncpg.connect(urls[name])
            await conn.execute("SET TimeZone = 'UTC'")
            await migrations.migrate(conn)
            if not daily:
                await monthly(conn)
        users = {
            name: await fill(conns[name], args.rows, args.users, d) for name, d in layouts.items()
        }
        counts = {n: len(await partitions.list_partitions(c)) for n, c in conns.items()}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in layouts}
        order = list(layouts)
        for k in range(args.rounds):
            for name in order if k % 2 == 0 else order[::-1]:
                results[name].append(await measure(conns[name], users[name], k))
        purges = {name: await purge_a_day(conns[name], d) for name, d in layouts.items()}
    finally:
        for conn in conns.values():
            await conn.close()
        for url in urls.values():
            await scratch.drop_database(admin, url)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC · {machine()} · load {load()}")
    print(f"{args.rows:,} rows over {DAYS} days, {args.users} users, {args.rounds} rounds\n")
    print(
        "| layout | partitions | INSERT_BATCH µs/message | history page µs | row by id µs"
        " | purge of the oldest day |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in layouts:
        cols = [
            " / ".join(f"{r[key]:.0f}" for r in results[name])
            for key in ("insert_us_per_message", "history_page_us", "row_by_id_us")
        ]
        seconds, deleted = purges[name]
        print(
            f"| {name} | {counts[name]} | {' | '.join(cols)} |"
            f" {seconds * 1000:.0f} ms ({deleted:,} rows) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
