"""`python run_server.py purge`: one run from the command line."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from server.jobs.purge import PURGE_LOCK
from tests.accounts import ROOT, TEST_SECRET, signup
from tests.jobs.history_rows import (
    NEW,
    OLD,
    add_row,
    row_ids,
)


@pytest.mark.parametrize("held", [False, True], ids=["runs", "skips-when-locked"])
async def test_run_server_purge_command(client, db, database_url, held: bool):
    _, _, user_id = await signup(client)
    old = await add_row(db, user_id, OLD)
    newer = await add_row(db, user_id, NEW)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET,
        "HISTORY_RETENTION_DAYS": "30",
    }
    if held:
        await db.execute("SELECT pg_advisory_lock($1)", PURGE_LOCK)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "run_server.py",
            "purge",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if held:
            await db.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK)

    assert proc.returncode == 0, err.decode()
    if held:
        assert b'"status":"skipped"' in out
        assert b"purge skipped: another instance is running it" in err
        assert await row_ids(db, user_id) == {old, newer}
    else:
        assert b'"status":"ok"' in out
        assert b"purged " in err
        assert await row_ids(db, user_id) == {newer}
