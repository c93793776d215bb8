"""The SQL of the chat store's group commit (`server.chat.store`): one statement per batch."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

# One statement stores a whole batch, messages and replies together: outside an explicit
# transaction it commits on its own, so an idle or a busy server pays one round trip per
# batch. chat_history is partitioned (server/db/partitions.py) and cannot hold the two
# unique indexes, so chat_keys decides (migration 0015): a message is inserted only when
# its key is (`fresh`: a (user, client id) stored already is skipped, a resend or a race
# with another instance, and looked up afterwards), and a reply only when it claims its
# message's key (`c`: one conditional UPDATE; a reply whose message is gone, or that is
# stored already, likewise). Ids come from chat_history's sequence. A message naming a
# conversation that is not its
# sender's is not inserted. A message naming none goes to its sender's most recently
# active conversation, looked up here (an index probe), not by migration 0008's per-row
# trigger: that trigger now fires only for a sender with no conversation at all (a new
# user's first message), and makes one under an advisory lock so that two instances
# make one; looking again after the lock takes a statement of its own, which a trigger
# has and this statement has not. A reply goes to its question's user and conversation
# (a guest's question may have moved to the account it joined meanwhile). A message of
# a user deleted meanwhile (a guest that joined an account) is not inserted: its foreign
# key would fail the whole batch. The per-statement trigger of 0008 then moves the
# conversations' activity, once a batch. `e` stores replies generated before their
# message was stored (REST with an LLM that answers at once: $11-$14, beside their
# messages, NULL for the others), with the message they answer when its key is new (not
# for a resend): the key is written with its reply's id already claimed, so one commit
# holds both. Every lookup has its index: the statement runs with a generic plan of
# nested loops (`server.db.pool.BATCH_SETTINGS`). The ids are drawn in `t` (in the batch's
# order) so that `m` finds its new keys by id in one array (an array scan a row), not by a
# nested loop over `fresh`, and `r` takes each claimed reply's columns at its first place
# in the arrays (`array_position`: the first of two replies to one message wins), not by
# a nested loop over `c`: those loops cost a 500-message batch 180 µs a message against
# 80 for batches of 50.
INSERT_BATCH = """
WITH t AS (
    SELECT nextval('chat_history_id_seq') AS id, x.u, x.m, x.c, x.v,
           CASE WHEN x.a IS NOT NULL THEN nextval('chat_history_id_seq') END AS rid
    FROM unnest($1::bigint[], $2::text[], $3::text[], $10::bigint[], $11::text[])
         AS x(u, m, c, v, a)
), fresh AS (
    INSERT INTO chat_keys (message_id, user_id, client_id, "timestamp", reply_id)
    SELECT t.id, t.u, t.c, now(), t.rid FROM t
    WHERE EXISTS (SELECT 1 FROM users s WHERE s.id = t.u)
      AND (t.v IS NULL
           OR EXISTS (SELECT 1 FROM conversations k WHERE k.id = t.v AND k.user_id = t.u))
    ON CONFLICT (user_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING message_id, user_id, client_id, reply_id
), m AS (
    INSERT INTO chat_history (id, user_id, message, is_user_message, client_id, conversation_id)
    SELECT t.id, t.u, t.m, true, t.c,
           coalesce(t.v, (SELECT k.id FROM conversations k WHERE k.user_id = t.u
                          ORDER BY k.updated_at DESC, k.id DESC LIMIT 1))
    FROM t
    WHERE t.id = ANY ((SELECT array_agg(message_id) FROM fresh)::bigint[])
    RETURNING id, user_id, client_id, NULL::bigint AS reply_to, "timestamp", conversation_id
), c AS (
    UPDATE chat_keys k SET reply_id = nextval('chat_history_id_seq')
    FROM chat_history q
    WHERE k.message_id = ANY($6::bigint[]) AND k.reply_id IS NULL
      AND q.id = k.message_id AND q."timestamp" = k."timestamp"
    RETURNING k.message_id, k.reply_id, q.user_id, q.conversation_id
), r AS (
    INSERT INTO chat_history (id, user_id, message, is_user_message, reply_to, finish_reason,
                              sources, token_lengths, conversation_id)
    SELECT c.reply_id, c.user_id, ($5::text[])[i.p], false, c.message_id, ($7::text[])[i.p],
           ($8::text[])[i.p]::jsonb, ($9::text[])[i.p]::integer[], c.conversation_id
    FROM c CROSS JOIN LATERAL (SELECT array_position($6::bigint[], c.message_id) AS p) i
    -- $4 (who sent the reply) is not needed: the user is the message's. Typed here.
    WHERE cardinality($4::bigint[]) = cardinality($6::bigint[])
    RETURNING id, user_id, NULL::text AS client_id, reply_to, "timestamp", conversation_id
), e AS (
    INSERT INTO chat_history (id, user_id, message, is_user_message, reply_to, finish_reason,
                              sources, token_lengths, conversation_id)
    SELECT fresh.reply_id, m.user_id, t.a, false, m.id, t.f, t.s::jsonb, t.l::integer[],
           m.conversation_id
    FROM unnest($1::bigint[], $3::text[], $11::text[], $12::text[], $13::text[],
                $14::text[]) AS t(u, c, a, f, s, l)
    JOIN fresh ON fresh.user_id = t.u AND fresh.client_id = t.c
    JOIN m ON m.id = fresh.message_id
    WHERE t.a IS NOT NULL
    RETURNING id, user_id, NULL::text AS client_id, reply_to, "timestamp", conversation_id
)
SELECT * FROM m UNION ALL SELECT * FROM r UNION ALL SELECT * FROM e
"""

EXISTING_MESSAGES = """
SELECT id, user_id, client_id, message, "timestamp", conversation_id FROM chat_history
WHERE (user_id, client_id) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))
"""

# Run after the batch's inserts, in its transaction: the batch's own rows count too.
RECENT_COUNTS = """
SELECT user_id, count(*) AS n,
       extract(epoch FROM min("timestamp") + make_interval(secs => $2) - now()) AS left_s
FROM chat_history
WHERE user_id = ANY($1::bigint[]) AND is_user_message
  AND "timestamp" > now() - make_interval(secs => $2)
GROUP BY user_id
"""

REPLIES_TO = 'SELECT id, reply_to, "timestamp" FROM chat_history WHERE reply_to = ANY($1::bigint[])'

# Messages taken back, with the replies stored with them.
DELETE_ROWS = (
    "DELETE FROM chat_history WHERE id = ANY($1::bigint[]) OR reply_to = ANY($1::bigint[])"
)

# Every statement the batches run, for the test that their plans use indexes only.
STATEMENTS = (INSERT_BATCH, EXISTING_MESSAGES, RECENT_COUNTS, REPLIES_TO, DELETE_ROWS)


async def insert_batch(
    conn: asyncpg.Connection, *columns: Sequence[object]
) -> list[asyncpg.Record]:
    """Insert a batch (`INSERT_BATCH`'s fourteen column arrays); the rows inserted."""
    return await conn.fetch(INSERT_BATCH, *columns)


async def existing_messages(
    conn: asyncpg.Connection, user_ids: list[int], client_ids: list[str]
) -> list[asyncpg.Record]:
    """The stored messages with these (user, client id) pairs."""
    return await conn.fetch(EXISTING_MESSAGES, user_ids, client_ids)


async def recent_counts(
    conn: asyncpg.Connection, user_ids: list[int], window_s: int
) -> list[asyncpg.Record]:
    """Per user: messages in the last `window_s` seconds, and when the oldest leaves it."""
    return await conn.fetch(RECENT_COUNTS, user_ids, float(window_s))


async def replies_to(conn: asyncpg.Connection, message_ids: list[int]) -> list[asyncpg.Record]:
    """The stored replies (id, reply_to, timestamp) of these messages."""
    return await conn.fetch(REPLIES_TO, message_ids)


async def delete_rows(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute(DELETE_ROWS, ids)
