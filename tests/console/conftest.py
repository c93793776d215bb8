"""The console's fixtures: the real app on a real PostgreSQL with an admin address (a
verified user on ADMIN_EMAILS) and a small knowledge base of its own, Debian's Chromium
driven by Playwright, a page and a phone. The rig is in rig.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, Page

from server.settings import Settings
from tests.accounts import unique_email
from tests.answers.test_admin import SEED
from tests.console.rig import XSS_DOC, Console, account
from tests.widget.browser import PHONE, ChatServer, Relay, chromium, free_port, new_page


@pytest.fixture
async def console(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Console]:
    # The collection is named after the file: a name of its own, documents of its own.
    path = tmp_path / f"kb-{uuid.uuid4().hex[:10]}.json"
    path.write_text(json.dumps([*SEED, XSS_DOC]), encoding="utf-8")
    admin_email = unique_email("admin")
    relay = Relay(free_port(), free_port())
    settings = make_settings(
        host="127.0.0.1",
        port=relay.target,
        public_url=f"http://localhost:{relay.port}",
        knowledge_path=path,
        admin_emails=frozenset({admin_email}),
        chat_rate_per_minute=0,
    )
    server = ChatServer(settings, relay)
    await relay.start()
    await server.start()
    yield Console(server, admin_email)
    await server.stop()
    await relay.close()


@pytest.fixture
async def admin_token(console: Console, db: asyncpg.Connection) -> str:
    return await account(console, db, console.admin_email)


@pytest.fixture
async def visitor(console: Console, db: asyncpg.Connection) -> str:
    """A visitor's token: someone who chats, not an admin."""
    return await account(console, db, unique_email("visitor"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    page = await new_page(browser)
    yield page
    await page.context.close()


@pytest.fixture
async def phone(browser) -> AsyncIterator[Page]:
    page = await new_page(browser, **PHONE)
    yield page
    await page.context.close()
