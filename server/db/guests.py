"""The SQL of guests and identified visitors: users without a password.

A guest that signs up becomes the account (the same row); one that logs in or is
identified joins another user: its conversations, messages and feedback move there
and the guest row goes. A moved message whose client id the other user has already
loses the id (history keeps it; resend and resume by that id no longer reach it).
"""

from __future__ import annotations

import asyncpg

from server.db.queries import USER_COLUMNS, Executor


async def create_guest(db: Executor) -> asyncpg.Record:
    return await db.fetchrow(
        f"INSERT INTO users (email, hashed_password, is_guest) VALUES (NULL, NULL, true)"
        f" RETURNING {USER_COLUMNS}"
    )


async def make_account(
    db: Executor, guest_id: int, email: str, email_key: str, hashed_password: str
) -> asyncpg.Record | None:
    """The guest becomes an account with this email and password, its tokens revoked
    (the generation moves on). None when it is no guest any more (a race); raises
    asyncpg.UniqueViolationError when the email is taken."""
    return await db.fetchrow(
        "UPDATE users SET email = $2, email_key = $3, hashed_password = $4, is_guest = false,"
        " token_generation = token_generation + 1"
        f" WHERE id = $1 AND is_guest RETURNING {USER_COLUMNS}",
        guest_id,
        email,
        email_key,
        hashed_password,
    )


async def merge_guest(pool: asyncpg.Pool, guest_id: int, into_id: int) -> bool:
    """Move everything of guest `guest_id` to user `into_id` and delete the guest, in one
    transaction; False when it is no guest (any more)."""
    if guest_id == into_id:
        return False
    async with pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchval(
            "SELECT id FROM users WHERE id = $1 AND is_guest FOR UPDATE", guest_id
        )
        if locked is None:
            return False
        await conn.execute(
            "UPDATE chat_history h SET user_id = $2, client_id = CASE WHEN EXISTS ("
            "  SELECT 1 FROM chat_history o WHERE o.user_id = $2 AND o.client_id = h.client_id)"
            " THEN NULL ELSE h.client_id END"
            " WHERE h.user_id = $1",
            guest_id,
            into_id,
        )
        # The keys of the two guarantees (migration 0015) follow, the same ids dropped.
        await conn.execute(
            "UPDATE chat_keys k SET user_id = $2, client_id = CASE WHEN EXISTS ("
            "  SELECT 1 FROM chat_keys o WHERE o.user_id = $2 AND o.client_id = k.client_id)"
            " THEN NULL ELSE k.client_id END"
            " WHERE k.user_id = $1",
            guest_id,
            into_id,
        )
        await conn.execute(
            "UPDATE conversations SET user_id = $2 WHERE user_id = $1", guest_id, into_id
        )
        await conn.execute("UPDATE feedback SET user_id = $2 WHERE user_id = $1", guest_id, into_id)
        await conn.execute("DELETE FROM users WHERE id = $1", guest_id)
    return True


async def identified_user(db: Executor, sub: str, email: str | None) -> asyncpg.Record:
    """The user bound to the host site's `sub`, made on first use (no password, not a
    guest, not verified). Its email_key is never an address: an `email` claim joins no
    account and blocks none. A later `email` claim updates the shown email."""
    return await db.fetchrow(
        "INSERT INTO users (email, email_key, hashed_password, identity_sub)"
        " VALUES ($2, 'identity:' || $1, NULL, $1)"
        " ON CONFLICT (identity_sub) WHERE identity_sub IS NOT NULL"
        " DO UPDATE SET email = coalesce(excluded.email, users.email)"
        f" RETURNING {USER_COLUMNS}",
        sub,
        email,
    )


async def delete_idle_guests(conn: asyncpg.Connection, before) -> int:
    """Guests made before `before` with no message since: deleted with everything of
    theirs (their rows cascade). The number of guests."""
    status = await conn.execute(
        "DELETE FROM users u WHERE u.is_guest AND u.created_at < $1"
        " AND NOT EXISTS (SELECT 1 FROM chat_history h"
        '  WHERE h.user_id = u.id AND h."timestamp" >= $1)',
        before,
    )
    return int(status.rsplit(" ", 1)[-1])
