"""The console's fixtures: the real app on a real PostgreSQL with an admin address (a
verified user on ADMIN_EMAILS) and a small knowledge base of its own, Debian's Chromium
driven by Playwright, a page and a phone. The rig is in rig.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, Page

from server.settings import Settings
from tests.accounts import unique_email
from tests.console.rig import Console, account, running_console
from tests.widget.browser import PHONE, chromium, new_page


@pytest.fixture
async def console(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Console]:
    async with running_console(make_settings, tmp_path) as console:
        yield console


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
