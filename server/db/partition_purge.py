"""The partitions of chat_history past retention: detached together, emptied, dropped.

Why these steps and not a DROP per partition: a DROP frees the partition's files at its
commit (about 9 ms a day of 77,000 rows here, most of it the commit) while it holds the
ACCESS EXCLUSIVE lock on chat_history that every chat statement waits behind (their
plans lock every partition: a lookup by id cannot prune). So:

1. `detach`: every partition past retention DETACHed in one transaction, the only one
   that locks chat_history (about 10 ms for 13 partitions, catalog work alone).
   DETACH … CONCURRENTLY is refused while a DEFAULT partition exists. DETACH gives the
   partition's foreign key triggers of its own on `users`, under SHARE ROW EXCLUSIVE
   there: only a write of users conflicts with it, and no transaction of the server
   writes users and then waits for chat_history (a guest's merge touches chat_history
   first; the deletion of idle guests is this job's own), so it cannot deadlock.
2. `delete_younger_replies`: the replies stored after midnight to their messages, in
   younger partitions (no new one can be stored once the message is detached: a reply
   claims its key through chat_history).
3. `empty`: their rows counted by the id index alone and the tables TRUNCATEd, in one
   transaction that locks only them: the files are freed here.
4. `drop_tables`: the empty tables dropped, which takes a brief ACCESS EXCLUSIVE lock on
   `users` (the triggers DETACH made go): catalog work alone.

A table detached by a run that failed before step 4 is a plain table named like a
partition; the next run finds it (`detached`) and finishes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from server.db.partitions import INITIAL, LOCK_TIMEOUT, PREFIX, Partition

# Plain tables named like a partition (or the converted table) that are none any more.
_DETACHED = f"""
SELECT c.relname FROM pg_class c
WHERE c.relkind = 'r' AND NOT c.relispartition
  AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'chat_history'::regclass)
  AND (c.relname ~ '^{PREFIX}[0-9]{{8}}$' OR c.relname = '{INITIAL}')
ORDER BY c.relname
"""


async def detach(conn: asyncpg.Connection, past: Sequence[Partition]) -> None:
    """Detach `past` from chat_history, all in one short transaction."""
    if not past:
        return
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute("LOCK TABLE chat_history IN ACCESS EXCLUSIVE MODE")
        await conn.execute(
            "; ".join(f"ALTER TABLE chat_history DETACH PARTITION {p.name}" for p in past)
        )


async def detached(conn: asyncpg.Connection) -> list[str]:
    """The tables detached and not yet dropped."""
    return [r["relname"] for r in await conn.fetch(_DETACHED)]


def _ids(names: Sequence[str]) -> str:
    return " UNION ALL ".join(f"SELECT id, is_user_message FROM {n}" for n in names)


async def delete_younger_replies(conn: asyncpg.Connection, names: Sequence[str]) -> int:
    """Delete the replies in chat_history to the messages of the detached tables `names`
    (stored after midnight, in a younger partition); how many."""
    if not names:
        return 0
    low, high = await conn.fetchrow(f"SELECT min(id), max(id) FROM ({_ids(names)}) m")
    if low is None:
        return 0
    status = await conn.execute(
        "DELETE FROM chat_history r WHERE r.reply_to BETWEEN $1 AND $2"
        f" AND EXISTS (SELECT 1 FROM ({_ids(names)}) m WHERE m.id = r.reply_to"
        " AND m.is_user_message)",
        low,
        high,
    )
    return int(status.rsplit(" ", 1)[-1])


async def empty(conn: asyncpg.Connection, names: Sequence[str]) -> int:
    """Count the rows of the detached tables `names` and TRUNCATE them, in one
    transaction; the rows."""
    if not names:
        return 0
    async with conn.transaction():
        # By the id indexes alone (old tables are all-visible): half a seq scan's time.
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetchval(f"SELECT count(*) FROM ({_ids(names)}) m")
        await conn.execute(f"TRUNCATE {', '.join(names)}")
    return rows


async def drop_tables(conn: asyncpg.Connection, names: Sequence[str]) -> None:
    """Drop the (emptied) detached tables `names`."""
    if not names:
        return
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE {', '.join(names)}")
