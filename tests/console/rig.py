"""The console's test rig: the server it runs on, the admin's steps, data in the contract's
shapes. Helpers, imported by the tests; the fixtures are in conftest.py.

The server, the relay in front of it and the browser are the widget tests' own
(`tests/widget/browser.py`).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from playwright.async_api import Page, expect

from server.settings import Settings
from tests.accounts import PASSWORD, unique_email
from tests.answers.test_admin import SEED
from tests.widget.browser import ARTIFACTS, ChatServer, Relay, free_port

# HTML in server texts: shown as text, never run (`window.__pwned` stays unset).
PWN_IMG = "<img src=x onerror=\"window.__pwned = 'img'\">"
PWN_SVG = '<svg onload="self.__hacked=1">'  # words that no document holds
XSS_DOC = {
    "id": "xss-doc",
    "topic": f"Gooseberry {PWN_IMG} topic",
    "content": f"Gooseberry jam needs pectin and patience. {PWN_IMG} <b>not bold</b>",
}


@dataclass
class Console:
    server: ChatServer
    admin_email: str

    @property
    def url(self) -> str:
        return f"{self.server.origin}/admin"

    async def api(self, method: str, path: str, token: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                self.server.direct + path,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            assert resp.status < 300, f"{method} {path}: {resp.status} {await resp.text()}"
            return await resp.json()


@contextlib.asynccontextmanager
async def running_console(
    make_settings: Callable[..., Settings], tmp_path: Path, **overrides: Any
) -> AsyncIterator[Console]:
    """The real app behind the widget tests' relay, with one admin address and a small
    knowledge base of its own (`overrides`: more settings)."""
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
        **overrides,
    )
    server = ChatServer(settings, relay)
    await relay.start()
    await server.start()
    try:
        yield Console(server, admin_email)
    finally:
        await server.stop()
        await relay.close()


async def account(
    console: Console, db: asyncpg.Connection, email: str, *, verified: bool = True
) -> str:
    """Sign `email` up over REST (verified when asked); returns its token."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            console.server.direct + "/api/v1/auth/signup",
            json={"email": email, "password": PASSWORD},
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    if verified:
        await db.execute("UPDATE users SET is_verified = true WHERE id = $1", body["id"])
    return body["access_token"]


def field(page: Page, label: str):
    """The form field labelled exactly `label` (hidden pages' fields included)."""
    return page.get_by_label(label, exact=True)


async def log_in(page: Page, console: Console, email: str, password: str = PASSWORD) -> None:
    await page.goto(console.url)
    await field(page, "Email").fill(email)
    await field(page, "Password").fill(password)
    await page.get_by_role("button", name="Log in").click()


async def admin_page(page: Page, console: Console, admin_token: str) -> Page:
    """The console, logged in as the admin, on its dashboard."""
    await log_in(page, console, console.admin_email)
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    await expect(page.locator("#stats dd").first).to_be_visible()
    return page


async def open_page(page: Page, name: str, heading: str) -> None:
    await page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


async def chat(console: Console, token: str, message: str) -> dict[str, Any]:
    return await console.api("POST", "/api/v1/chat/chat", token, {"message": message})


async def no_script_ran(page: Page) -> None:
    assert await page.evaluate("() => [window.__pwned, window.__hacked]") == [None, None]
    assert await page.locator("main img, main svg").count() == 0
