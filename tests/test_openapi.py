"""The OpenAPI document matches the server: schemathesis, every operation, every check.

The real server runs as a process on the test database; schemathesis's CLI reads its
`/openapi.json` and sends what the document allows (and what it does not) to every
operation, admin ones included, as an admin (a verified user on ADMIN_EMAILS). Its checks
cover 5xx answers, undocumented status codes and content types, responses that break their
schema, valid data refused and invalid data accepted. `tests/schemathesis.toml` names the
two answers no request data can avoid (a made-up verification token, a GET that is not a
WebSocket handshake).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from server.db import scratch
from tests.accounts import PASSWORD, TEST_SECRET, unique_email
from tests.processes import ROOT, server_process

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SEED = "20261204"  # fixed, so a failure here reproduces; change it to explore further
MAX_EXAMPLES = "60"


@pytest.mark.timeout(600)  # about 30 s alone; several minutes on a loaded machine
async def test_schemathesis_finds_nothing(tmp_path, admin_database_url):
    admin = unique_email("admin")
    # A database of its own: schemathesis edits and deletes knowledge-base documents.
    async with (
        scratch.scratch_database(admin_database_url, "chat_openapi") as database_url,
        server_process(
            tmp_path, database_url, TEST_SECRET, ADMIN_EMAILS=admin, CHAT_RATE_PER_MINUTE="0"
        ) as server,
    ):
        async with aiohttp.ClientSession() as session:
            body = {"email": admin, "password": PASSWORD}
            async with session.post(server.url + "/api/v1/auth/signup", json=body) as resp:
                assert resp.status == 201
                token = (await resp.json())["access_token"]
        db = await asyncpg.connect(database_url)
        try:
            await db.execute("UPDATE users SET is_verified = true WHERE email = $1", admin)
        finally:
            await db.close()

        proc = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--no-color",
            "--config-file",
            str(CONFIG),
            "run",
            server.url + "/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            cwd=tmp_path,  # its crash cache lands there, not in the checkout
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 540)
        report = out.decode(errors="replace")
        assert proc.returncode == 0, report
        assert "18/18" in report or "Tested: " in report, report
        # No traceback passed through the server's own code while it was fuzzed (aiohttp's
        # parser logs the requests it refuses itself, a NUL in a header, with a 400).
        assert f'File "{ROOT / "server"}/' not in server.output(), server.output()[-5000:]
