"""chat_history partitioned by day: the partitions, made ahead, dropped whole, and the conversion.

Why daily: the purge drops every partition entirely past retention, and deletes by exact
age only in the one partition that straddles the cutoff; with a daily purge that is one
day's rows at most, and a backlog of any size costs one DROP per day of it. Monthly
partitions would leave up to a month of rows to the slow path. Reads that cannot prune
(a user's newest history, a row by id) visit each of the ~32 partitions' indexes;
bench/README.md has both measured.

Made by the server itself, not pg_partman: the embedded PostgreSQL (pgserver) has no
pg_partman, and one code path serves both. Partitions for today and AHEAD_DAYS after are
made at start-up (`migrations.migrate`) and at every purge run; a DEFAULT partition takes
any row no partition covers (an import with old timestamps, a server that was down longer
than AHEAD_DAYS), so no insert ever fails, and the purge deletes there by exact age too.
A partition is made as a plain table and then ATTACHed (SHARE UPDATE EXCLUSIVE on
chat_history, so chat goes on; `CREATE TABLE … PARTITION OF` would take ACCESS
EXCLUSIVE); rows the DEFAULT partition holds for its day move into it first.

The partitions past retention are detached together, emptied and dropped by
`server.db.partition_purge`. LOCK_TIMEOUT bounds how long chat can queue behind DDL.

The two unique guarantees live in `chat_keys` (migration 0015). The conversion of an
unpartitioned table (`convert`) keeps its rows, ids and sequence, without a long lock.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
AHEAD_DAYS = 7  # partitions made ahead of today: a week of start-ups or purges may fail
LOCK_TIMEOUT = "2s"  # how long DDL may wait for (and make chat queue behind) a lock
PREFIX = "chat_history_p"
DEFAULT = "chat_history_default"
INITIAL = "chat_history_initial"  # the table as it was before partitioning
FIRST_BOUND = "chat_history_before_partitions"  # the conversion's CHECK constraint
KEYS_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition; `lo` None: from the beginning (MINVALUE); both None: DEFAULT."""

    name: str
    lo: datetime | None
    hi: datetime | None

    @property
    def is_default(self) -> bool:
        return self.lo is None and self.hi is None


# -- pure: names and bounds --------------------------------------------------------------


def day_start(at: datetime) -> datetime:
    """The UTC midnight at or before `at`."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def name_of(day: datetime) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


_BOUND = re.compile(r"FROM \((.+?)\) TO \((.+?)\)")


def _value(text: str) -> datetime | None:
    if text == "MINVALUE" or text == "MAXVALUE":
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)


def parse_bound(name: str, expr: str) -> Partition:
    """A partition from `pg_get_expr(relpartbound)`, as a UTC session prints it."""
    if expr == "DEFAULT":
        return Partition(name, None, None)
    match = _BOUND.search(expr)
    if match is None:
        raise ValueError(f"not a range partition bound: {expr}")
    return Partition(name, _value(match.group(1)), _value(match.group(2)))


def missing_days(partitions: Iterable[Partition], first: datetime, days: int) -> list[datetime]:
    """The days from `first` (a UTC midnight) on, `days` of them, that no partition
    (the DEFAULT aside) overlaps."""
    ranges = [
        (p.lo or datetime.min.replace(tzinfo=UTC), p.hi or datetime.max.replace(tzinfo=UTC))
        for p in partitions
        if not p.is_default
    ]
    out = []
    for n in range(days):
        day = first + n * DAY
        if not any(lo < day + DAY and day < hi for lo, hi in ranges):
            out.append(day)
    return out


def past_retention(partitions: Iterable[Partition], cutoff: datetime) -> list[Partition]:
    """The partitions whose every row is older than `cutoff`, oldest first."""
    past = [p for p in partitions if p.hi is not None and p.hi <= cutoff]
    return sorted(past, key=lambda p: p.hi)


# -- reading and making partitions -------------------------------------------------------

_LIST = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'chat_history'::regclass
"""


async def list_partitions(conn: asyncpg.Connection) -> list[Partition]:
    """chat_history's partitions (none while it is not partitioned)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL TimeZone = 'UTC'")  # the bounds' text, parsed above
        rows = await conn.fetch(_LIST)
    return [parse_bound(r["relname"], r["bound"]) for r in rows]


async def is_partitioned(conn: asyncpg.Connection) -> bool:
    kind = await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = 'chat_history'::regclass")
    return kind == b"p" or kind == "p"


async def create_partition(conn: asyncpg.Connection, day: datetime) -> str:
    """Make and attach the partition of `day`, moving into it what the DEFAULT holds."""
    name, hi = name_of(day), day + DAY
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # The locks ATTACH takes, in the order chat takes them (chat_history, then its
        # partitions): taken later, the DEFAULT's would upgrade the move's and deadlock.
        await conn.execute("LOCK TABLE chat_history IN SHARE UPDATE EXCLUSIVE MODE")
        await conn.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        await conn.execute(f"CREATE TABLE {name} (LIKE chat_history INCLUDING DEFAULTS)")
        await conn.execute(
            f'WITH moved AS (DELETE FROM {DEFAULT} WHERE "timestamp" >= $1'
            f' AND "timestamp" < $2 RETURNING *) INSERT INTO {name} SELECT * FROM moved',
            day,
            hi,
        )
        await conn.execute(
            f"ALTER TABLE chat_history ATTACH PARTITION {name}"
            f" FOR VALUES FROM ('{day.isoformat()}') TO ('{hi.isoformat()}')"
        )
    return name


async def ensure_ahead(
    conn: asyncpg.Connection, now: datetime | None = None, days: int = AHEAD_DAYS
) -> list[str]:
    """Make the partitions of today and the `days` after that are missing; their names.
    A failure (a lock not granted in time) is logged and left to the next call: the
    DEFAULT partition takes the rows meanwhile."""
    if not await is_partitioned(conn):
        return []
    today = day_start(now or datetime.now(UTC))
    made = []
    for day in missing_days(await list_partitions(conn), today, days + 1):
        try:
            made.append(await create_partition(conn, day))
        except asyncpg.PostgresError as exc:
            log.warning("could not make the partition of %s: %s", day.date(), exc)
            break
    if made:
        log.info("made partitions %s", ", ".join(made))
    return made


# -- the keys of purged messages ------------------------------------------------------


async def forget_keys(conn: asyncpg.Connection, before: datetime) -> int:
    """The keys of messages older than `before`: run once every such message is gone
    (dropped with its partition, or purged by age); the keys deleted."""
    status = await conn.execute('DELETE FROM chat_keys WHERE "timestamp" < $1', before)
    return int(status.rsplit(" ", 1)[-1])


# -- converting an unpartitioned chat_history --------------------------------------------

_BACKFILL_KEYS = """
WITH b AS (
    SELECT id, user_id, client_id, "timestamp" FROM chat_history
    WHERE is_user_message AND id > $1 ORDER BY id LIMIT $2
), k AS (
    INSERT INTO chat_keys (message_id, user_id, client_id, "timestamp", reply_id)
    SELECT b.id, b.user_id, b.client_id, b."timestamp",
           (SELECT r.id FROM chat_history r WHERE r.reply_to = b.id ORDER BY r.id LIMIT 1)
    FROM b
    ON CONFLICT (message_id) DO UPDATE
    SET reply_id = coalesce(chat_keys.reply_id, excluded.reply_id)
)
SELECT count(*) AS n, max(id) AS last FROM b
"""

# Indexes the partitions need that the old table has only as unique ones (or, before
# conversations' backfill, not at all): built CONCURRENTLY on the old table first, so the
# ATTACH finds every index it needs and builds none under its lock.
_OLD_TABLE_INDEXES = {
    "chat_history_id": "(id)",
    "chat_history_client_id": "(user_id, client_id) WHERE client_id IS NOT NULL",
    "chat_history_reply_to": "(reply_to) WHERE reply_to IS NOT NULL",
    "chat_history_conversation": "(conversation_id, id)",
}


async def convert(conn: asyncpg.Connection, now: datetime | None = None) -> bool:
    """Make an unpartitioned chat_history a partitioned one; False when it already is.

    Without downtime for chat: each step is short, or takes only locks that let reads and
    writes go on.
    1. A CHECK ("timestamp" < the day after tomorrow) NOT VALID: a moment's lock.
    2. VALIDATE it: a scan under SHARE UPDATE EXCLUSIVE (writes go on).
    3. The indexes partitions need, built CONCURRENTLY.
    4. chat_keys filled from the rows, in batches (its trigger of migration 0015 keeps
       up with rows stored meanwhile by instances of the previous version).
    5. The switch, one short transaction: the old table is renamed chat_history_initial,
       a partitioned chat_history made in its place (the same columns, defaults and
       sequence, now owned by it), with its triggers and a DEFAULT partition, and the old
       table ATTACHed as the partition of everything before the CHECK's bound (the
       validated CHECK spares ATTACH its scan; its indexes match, so none is built). An
       empty old table is dropped instead. Ids and the sequence are kept.
    Instances of the previous version cannot store rows after the switch (their ON
    CONFLICT names a unique index that is gone): the update should replace them promptly.
    """
    if await is_partitioned(conn):
        return False
    bound = await _first_bound(conn, now or datetime.now(UTC))
    await conn.execute(f"ALTER TABLE chat_history VALIDATE CONSTRAINT {FIRST_BOUND}")
    for name, columns in _OLD_TABLE_INDEXES.items():
        await _build_index(conn, name, columns)
    after = 0
    while True:
        row = await conn.fetchrow(_BACKFILL_KEYS, after, KEYS_BATCH)
        if not row["n"]:
            break
        after = row["last"]
    await _switch(conn, bound)
    log.info("chat_history is partitioned by day (the old rows: before %s)", bound.date())
    return True


async def _first_bound(conn: asyncpg.Connection, now: datetime) -> datetime:
    """The CHECK's bound: kept from an interrupted conversion if still a day ahead."""
    # The bound's literal carries its UTC offset: read back whatever the session's zone.
    at = await conn.fetchval(
        "SELECT substring(pg_get_constraintdef(oid) from '''([^'']+)''')::timestamptz"
        " FROM pg_constraint WHERE conrelid = 'chat_history'::regclass AND conname = $1",
        FIRST_BOUND,
    )
    if at is not None and at >= now + DAY:
        return at
    bound = day_start(now) + 2 * DAY
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"ALTER TABLE chat_history DROP CONSTRAINT IF EXISTS {FIRST_BOUND}")
        await conn.execute(
            f"ALTER TABLE chat_history ADD CONSTRAINT {FIRST_BOUND}"
            f" CHECK (\"timestamp\" < '{bound.isoformat()}') NOT VALID"
        )
    return bound


async def _build_index(conn: asyncpg.Connection, name: str, columns: str) -> None:
    valid = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = $1",
        name,
    )
    if valid:
        return
    if valid is False:  # left by an interrupted build
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    await conn.execute(f"CREATE INDEX CONCURRENTLY {name} ON chat_history {columns}")


_OLD_TRIGGERS = """
SELECT tgname, pg_get_triggerdef(oid) AS definition FROM pg_trigger
WHERE tgrelid = 'chat_history'::regclass AND NOT tgisinternal
"""
# The old table's non-unique indexes: the partitioned table gets the same (same names;
# the old ones are renamed), so ATTACH matches each with its twin.
_OLD_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'chat_history'::regclass AND NOT i.indisunique AND i.indisvalid
"""


async def _switch(conn: asyncpg.Connection, bound: datetime) -> None:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute("LOCK TABLE chat_history IN ACCESS EXCLUSIVE MODE")
        triggers = await conn.fetch(_OLD_TRIGGERS)
        indexes = await conn.fetch(_OLD_INDEXES)
        for t in triggers:
            await conn.execute(f"DROP TRIGGER {t['tgname']} ON chat_history")
        for i in indexes:
            await conn.execute(f"ALTER INDEX {i['relname']} RENAME TO {i['relname']}_initial")
        await conn.execute(f"ALTER TABLE chat_history RENAME TO {INITIAL}")
        await conn.execute(
            f"CREATE TABLE chat_history (LIKE {INITIAL} INCLUDING DEFAULTS)"
            ' PARTITION BY RANGE ("timestamp")'
        )
        await conn.execute("ALTER SEQUENCE chat_history_id_seq OWNED BY chat_history.id")
        await conn.execute(
            "ALTER TABLE chat_history ADD CONSTRAINT chat_history_user_id_fkey"
            " FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE"
        )
        for i in indexes:
            await conn.execute(i["definition"])
        await conn.execute(f"CREATE TABLE {DEFAULT} PARTITION OF chat_history DEFAULT")
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {INITIAL})"):
            await conn.execute(
                f"ALTER TABLE chat_history ATTACH PARTITION {INITIAL}"
                f" FOR VALUES FROM (MINVALUE) TO ('{bound.isoformat()}')"
            )
            await conn.execute(f"ALTER TABLE {INITIAL} DROP CONSTRAINT {FIRST_BOUND}")
        else:
            await conn.execute(f"DROP TABLE {INITIAL}")
        for t in triggers:
            if t["tgname"] != "chat_keys_follow":
                await conn.execute(t["definition"])
        await conn.execute("DROP FUNCTION chat_keys_follow()")
