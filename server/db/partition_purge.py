"""The partitions of chat_history past retention: detached together, emptied, dropped.

Why three steps and not a DROP per partition: a DROP frees the partition's files at its
commit (about 9 ms a day of 77,000 rows here, most of it the commit) while it holds the
ACCESS EXCLUSIVE lock on chat_history that every chat statement waits behind (their
plans lock every partition: a lookup by id cannot prune). So:

1. `detach`: every partition past retention DETACHed in one transaction, the only one
   that locks chat_history (about 10 ms for 13 partitions, catalog work alone).
   DETACH … CONCURRENTLY is refused while a DEFAULT partition exists. DETACH gives the
   partition's foreign key triggers of its own on `users` (SHARE ROW EXCLUSIVE there,
   which no chat statement's lock conflicts with); chat_history is locked first, as
   every transaction that takes both does, so the two never deadlock with chat.
2. `empty_detached`: the younger replies of their messages deleted (no new one can be
   stored once the message is detached: a reply claims its key through chat_history),
   their rows counted by the id index alone, and the tables TRUNCATEd, in one
   transaction that locks only them: the files are freed here.
3. `drop_tables`: the empty tables dropped, which takes a brief ACCESS EXCLUSIVE lock on
   `users` (the triggers DETACH made go): catalog work alone.

A table detached by a run that failed before step 3 is a plain table named like a
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


async def empty_detached(conn: asyncpg.Connection, names: Sequence[str]) -> int:
    """Delete the younger replies of the messages of the detached tables `names`, and
    empty the tables; the history rows this deleted (theirs and the replies)."""
    if not names:
        return 0
    ids = " UNION ALL ".join(f"SELECT id, is_user_message FROM {n}" for n in names)
    async with conn.transaction():
        # By the id indexes alone (old tables are all-visible): half a seq scan's time.
        await conn.execute("SET LOCAL enable_seqscan = off")
        low, high, rows = await conn.fetchrow(f"SELECT min(id), max(id), count(*) FROM ({ids}) m")
        replies = 0
        if rows:
            status = await conn.execute(
                "DELETE FROM chat_history r WHERE r.reply_to BETWEEN $1 AND $2"
                f" AND EXISTS (SELECT 1 FROM ({ids}) m WHERE m.id = r.reply_to"
                " AND m.is_user_message)",
                low,
                high,
            )
            replies = int(status.rsplit(" ", 1)[-1])
        await conn.execute(f"TRUNCATE {', '.join(names)}")
    return rows + replies


async def drop_tables(conn: asyncpg.Connection, names: Sequence[str]) -> None:
    """Drop the (emptied) detached tables `names`."""
    if not names:
        return
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE {', '.join(names)}")
