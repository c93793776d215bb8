"""The widget tests' fixtures: the chat server, host sites, Chromium and a page.

The rig itself (the relay, the host sites, the visitor's steps) is in browser.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from server.settings import DEFAULT_KNOWLEDGE, Settings
from tests.widget.browser import (
    EXTRA_KNOWLEDGE,
    TOKEN_DELAY_MS,
    ChatServer,
    HostSite,
    Relay,
    chromium,
    free_port,
    host_page,
    new_page,
)


@pytest.fixture
def knowledge_file(tmp_path: Path) -> Path:
    docs = json.loads(DEFAULT_KNOWLEDGE.read_text(encoding="utf-8")) + EXTRA_KNOWLEDGE
    path = tmp_path / "knowledge.json"
    path.write_text(json.dumps(docs), encoding="utf-8")
    return path


@pytest.fixture
async def host_site() -> AsyncIterator[HostSite]:
    site = HostSite(free_port())
    await site.start()
    yield site
    await site.close()


@pytest.fixture
async def other_site() -> AsyncIterator[HostSite]:
    """A site that is not on ALLOWED_ORIGINS."""
    site = HostSite(free_port())
    await site.start()
    yield site
    await site.close()


@pytest.fixture
def serve_chat(
    make_settings: Callable[..., Settings], host_site: HostSite, knowledge_file: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[ChatServer]]:
    """`async with serve_chat(**settings) as server`: the chat server for `host_site`,
    behind its relay, with these settings on top of the usual ones."""

    @contextlib.asynccontextmanager
    async def serve(**extra: Any) -> AsyncIterator[ChatServer]:
        relay = Relay(free_port(), free_port())
        settings = make_settings(
            host="127.0.0.1",
            port=relay.target,
            public_url=f"http://localhost:{relay.port}",
            allowed_origins=(host_site.origin,),
            llm_token_delay_ms=TOKEN_DELAY_MS,
            knowledge_path=knowledge_file,
            shutdown_timeout_s=0.5,
            **extra,
        )
        server = ChatServer(settings, relay)
        await relay.start()
        await server.start()
        host_site.pages["index"] = host_page(server.origin)
        try:
            yield server
        finally:
            await server.stop()
            await relay.close()

    return serve


@pytest.fixture
async def chat_server(serve_chat) -> AsyncIterator[ChatServer]:
    async with serve_chat() as server:
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture(params=["refused", "partitioned"])
async def storage_browser(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Browser]]:
    """Both kinds of third-party storage: refused, and partitioned but kept."""
    async with chromium(request.param) as browser:
        yield request.param, browser


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    page = await new_page(browser)
    yield page
    await page.context.close()
