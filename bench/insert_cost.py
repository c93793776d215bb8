"""What one chat message costs PostgreSQL in the group-commit INSERT, per schema variant.

    DATABASE_URL=postgresql://user@host/postgres python bench/insert_cost.py [--batches 400]

Replays the store's own batch statement (`INSERT_BATCH`: a batch's new messages and the
replies to the previous batch's, in one statement) on a throwaway database with the
project's migrations, once as migrated and once per variant that drops one index or
constraint of `chat_history`. Prints the wall time per message (two rows) on one
connection with `synchronous_commit=off`, so what is left is PostgreSQL's work and the
round trip, not the disk. This is how `reply_to` lost its foreign key (migration 0004);
the variants that remove what the contract or the queries need are there to show what
each piece costs, not as proposals.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.db import scratch  # noqa: E402
from server.db.conversations import build_index  # noqa: E402
from server.db.group_commit import INSERT_BATCH  # noqa: E402
from server.db.migrations import migrate  # noqa: E402

PER_BATCH = 50  # messages a batch (and as many replies)
USERS = 100
REPLY = "The answer is about twenty tokens long, like the mock's answers in the chat benchmark."
VARIANTS = {
    "as migrated": [],
    "without chat_history_user_recent": ["DROP INDEX chat_history_user_recent"],
    "without chat_history_timestamp": ["DROP INDEX chat_history_timestamp"],
    "without chat_history_user_newest": ["DROP INDEX chat_history_user_newest"],
    "without the user_id foreign key": [
        "ALTER TABLE chat_history DROP CONSTRAINT chat_history_user_id_fkey"
    ],
    "with a reply_to foreign key (before 0004)": [
        "ALTER TABLE chat_history ADD FOREIGN KEY (reply_to)"
        " REFERENCES chat_history (id) ON DELETE CASCADE"
    ],
}


async def per_message_us(admin: str, changes: list[str], batches: int) -> tuple[float, int]:
    """(µs per message, replies stored) for `batches` batches on a fresh database."""
    async with scratch.scratch_database(admin, "chat_bench") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await build_index(conn)  # built at start-up, after the migrations
            for sql in changes:
                await conn.execute(sql)
            await conn.execute(
                "INSERT INTO users (email, hashed_password)"
                " SELECT 'u' || g || '@example.com', 'x' FROM generate_series(1, $1) g",
                USERS,
            )
            users = [r["id"] for r in await conn.fetch("SELECT id FROM users ORDER BY id")]
            await conn.execute("SET synchronous_commit = off")
            await conn.execute("SET plan_cache_mode = force_custom_plan")  # as pool.py does
            previous: list[tuple[int, int]] = []  # (user, message id) awaiting a reply
            started = time.perf_counter()
            for _ in range(batches):
                who = [users[i % len(users)] for i in range(PER_BATCH)]
                n = len(previous)
                rows = await conn.fetch(
                    INSERT_BATCH,
                    who,
                    ["How is PURGE_CRON written?"] * PER_BATCH,
                    [uuid.uuid4().hex for _ in range(PER_BATCH)],
                    [u for u, _ in previous],
                    [REPLY] * n,
                    [m for _, m in previous],
                    ["stop"] * n,
                    ['[{"id":"bench","topic":"Benchmarks","score":0.95}]'] * n,
                    ["{3,1,4,5,3,2,6,3,4,5,2,3,4,5,6,2,3,4,5,6}"] * n,
                    [None] * PER_BATCH,  # no conversation named: each user's most recent one
                )
                previous = [(r["user_id"], r["id"]) for r in rows if r["reply_to"] is None]
            took = time.perf_counter() - started
            replies = await conn.fetchval(
                "SELECT count(*) FROM chat_history WHERE NOT is_user_message"
            )
            return took / (batches * PER_BATCH) * 1e6, replies
        finally:
            await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2, help="times each variant is run")
    args = parser.parse_args()
    admin = scratch.admin_url(ROOT / "var" / "bench")
    print(f"{args.batches} batches of {PER_BATCH} messages + {PER_BATCH} replies")
    print("| variant | µs per message (2 rows), each round |\n| --- | --- |")
    for name, changes in VARIANTS.items():
        runs = [await per_message_us(admin, changes, args.batches) for _ in range(args.rounds)]
        print(f"| {name} | {' / '.join(f'{us:.1f}' for us, _ in runs)} |")


if __name__ == "__main__":
    asyncio.run(main())
