"""What one chat message costs PostgreSQL in the group-commit INSERT, per schema variant.

    DATABASE_URL=postgresql://user@host/postgres python bench/insert_cost.py [--batches 400]
        [--per-batch 50] [--rounds 2] [--only "as migrated"] [--baseline DIR]

Replays the store's own batch statement (`INSERT_BATCH`: a batch's new messages and the
replies to the previous batch's, in one statement) on a throwaway database with the
project's migrations, once as migrated and once per variant that drops one index or
constraint of `chat_history`, with the session settings of the server's batches
(`BATCH_SETTINGS`; before them, a plan made for each batch). Prints, per message (two
rows), the CPU time of the PostgreSQL backend serving the connection and the wall time,
on one connection with
`synchronous_commit=off`, so what is left is PostgreSQL's work and the round trip, not
the disk. This is how `reply_to` lost its foreign key (migration 0004); the variants
that remove what the contract or the queries need are there to show what each piece
costs, not as proposals. `--baseline DIR` measures another checkout's statement and
migrations too (in a process of its own, `BENCH_ROOT=DIR`), alternating round by round.
Each batch's messages come from as many different users (of 100), each user with one
conversation after its first message, as in the chat benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("BENCH_ROOT", str(ROOT)))  # the checkout measured

from server.db import scratch  # noqa: E402
from server.db.group_commit import INSERT_BATCH  # noqa: E402
from server.db.migrations import migrate  # noqa: E402

try:
    from server.db.conversations import build_index
except ImportError:  # a checkout from before conversations (migration 0008)
    build_index = None
try:
    from server.db.pool import BATCH_SETTINGS as SESSION
except ImportError:  # before the batches had connections of their own (2026-12-05)
    SESSION = {"plan_cache_mode": "force_custom_plan"}

sys.path.insert(1, str(ROOT))
from bench.harness import cpu_seconds  # noqa: E402

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
    "without chat_history_conversation": ["DROP INDEX chat_history_conversation"],
    "without the activity trigger (0008)": [
        "DROP TRIGGER chat_history_touch_conversations ON chat_history"
    ],
    "without the keys' adopt trigger (0015)": ["DROP TRIGGER chat_keys_adopt ON chat_history"],
    "conversations indexed by user only (activity updates HOT)": [
        "DROP INDEX conversations_user_active",
        "CREATE INDEX conversations_user ON conversations (user_id)",
    ],
    "with a reply_to foreign key (before 0004)": [
        "ALTER TABLE chat_history ADD FOREIGN KEY (reply_to)"
        " REFERENCES chat_history (id) ON DELETE CASCADE"
    ],
}


async def per_message_us(
    admin: str, changes: list[str], batches: int, per_batch: int
) -> tuple[float, float, int]:
    """(backend CPU µs, wall µs per message, replies stored) for `batches` batches of
    `per_batch` messages on a fresh database."""
    async with scratch.scratch_database(admin, "chat_bench") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            if build_index is not None:
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
            for name, value in SESSION.items():  # as the server's batches run
                await conn.execute(f"SET {name} = {value}")
            previous: list[tuple[int, int]] = []  # (user, message id) awaiting a reply
            backend = conn.get_server_pid()
            cpu, started = cpu_seconds(backend), time.perf_counter()
            for b in range(batches):
                who = [users[(b * per_batch + i) % len(users)] for i in range(per_batch)]
                n = len(previous)
                rows = await conn.fetch(
                    INSERT_BATCH,
                    who,
                    ["How is PURGE_CRON written?"] * per_batch,
                    [uuid.uuid4().hex for _ in range(per_batch)],
                    [u for u, _ in previous],
                    [REPLY] * n,
                    [m for _, m in previous],
                    ["stop"] * n,
                    ['[{"id":"bench","topic":"Benchmarks","score":0.95}]'] * n,
                    ["{3,1,4,5,3,2,6,3,4,5,2,3,4,5,6,2,3,4,5,6}"] * n,
                    # No conversation named: each user's most recent one (none before 0008),
                    # and no reply stored with its message (none before 2026-12-05).
                    *([[None] * per_batch] if "$10" in INSERT_BATCH else []),
                    *([[None] * per_batch] * 4 if "$14" in INSERT_BATCH else []),
                )
                previous = [(r["user_id"], r["id"]) for r in rows if r["reply_to"] is None]
            took, cpu = time.perf_counter() - started, cpu_seconds(backend) - cpu
            replies = await conn.fetchval(
                "SELECT count(*) FROM chat_history WHERE NOT is_user_message"
            )
            messages = batches * per_batch
            return cpu / messages * 1e6, took / messages * 1e6, replies
        finally:
            await conn.close()


def measure_in(root: Path, variant: str, args: argparse.Namespace) -> tuple[float, float]:
    """One round of `variant` with the checkout `root`'s statement and migrations."""
    argv = [sys.executable, __file__, "--one", variant, "--batches", str(args.batches)]
    argv += ["--per-batch", str(args.per_batch)]
    env = {**os.environ, "BENCH_ROOT": str(root)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{root}: {variant}: {done.stderr}")
    cpu, wall = done.stdout.split()
    return float(cpu), float(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--per-batch", type=int, default=50, help="messages (and replies) a batch")
    parser.add_argument("--rounds", type=int, default=2, help="times each variant is run")
    parser.add_argument("--only", action="append", help="this variant only (repeatable)")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alike")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: one variant, one round
    args = parser.parse_args()
    admin = scratch.admin_url(ROOT / "var" / "bench")
    if args.one is not None:
        cpu, wall, _ = asyncio.run(
            per_message_us(admin, VARIANTS[args.one], args.batches, args.per_batch)
        )
        print(f"{cpu:.1f} {wall:.1f}")
        return
    targets = [("ours", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    variants = args.only or list(VARIANTS)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for k in range(args.rounds):
        order = [(t, v) for v in variants for t in targets]
        for (target, root), variant in order if k % 2 == 0 else order[::-1]:
            runs.setdefault((target, variant), []).append(measure_in(root, variant, args))
    print(f"{args.batches} batches of {args.per_batch} messages + {args.per_batch} replies")
    print("| target | variant | PostgreSQL CPU µs per message (2 rows), each round | wall µs |")
    print("| --- | --- | --- | --- |")
    for (target, variant), figures in runs.items():
        cpus = " / ".join(f"{cpu:.1f}" for cpu, _ in figures)
        walls = " / ".join(f"{wall:.1f}" for _, wall in figures)
        print(f"| {target} | {variant} | {cpus} | {walls} |")


if __name__ == "__main__":
    main()
