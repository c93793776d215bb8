"""Test users and the test secret: what tests need to sign up and mint tokens.

Helpers, imported by tests; the fixtures are in conftest.py.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiohttp.test_utils import TestClient

ROOT = Path(__file__).resolve().parent.parent


TEST_SECRET = "test-secret-key-that-is-long-enough-for-every-hmac-0123456789abcd"


PASSWORD = "correct horse battery"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


async def signup(client: TestClient, email: str | None = None, password: str = PASSWORD):
    """Create a user; returns (email, access token, user id)."""
    email = email or unique_email()
    resp = await client.post("/api/v1/auth/signup", json={"email": email, "password": password})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return email, body["access_token"], body["id"]


async def mailed_token(caplog, email: str) -> str:
    """The verification token mailed to `email` (the log mailer writes mail to the log;
    the test sets `caplog.set_level("INFO", logger="server.mail")`)."""
    return (await mailed_link(caplog, email)).split("#token=")[1]


async def mailed_link(caplog, email: str) -> str:
    """The link (the verification page, `#token=…`) mailed to `email`."""
    for _ in range(200):
        for record in caplog.records:
            text = record.getMessage()
            if record.name == "server.mail" and f"email to {email}:".lower() in text.lower():
                return next(w for w in text.split() if "#token=" in w)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no mail to {email}")
