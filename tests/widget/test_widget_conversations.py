"""The widget's conversations, guests and host-site identities, in Chromium against the
real server: a guest asks, signs up, reloads and still sees the conversation; two
conversations stay apart; a host page with data-identity-token chats as that user at
once and ChatWidget.logout() forgets them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import jwt
import pytest
from playwright.async_api import Browser, Page, expect

from tests.accounts import PASSWORD, unique_email
from tests.widget.browser import (
    ChatServer,
    HostSite,
    ask,
    chromium,
    history,
    host_page,
    new_page,
    open_widget,
    rest_token,
    wait_reply,
)

IDENTITY_SECRET = "host-identity-secret-" + "0123456789abcdef" * 3


@pytest.fixture
async def guest_server(serve_chat) -> AsyncIterator[ChatServer]:
    """The chat server with ALLOW_GUESTS (no limit per address) and IDENTITY_SECRET."""
    async with serve_chat(
        allow_guests=True, guests_per_hour_per_address=0, identity_secret=IDENTITY_SECRET
    ) as server:
        yield server


@pytest.fixture
async def kept_storage() -> AsyncIterator[Browser]:
    """A browser that lets the widget's frame keep (partitioned) storage."""
    async with chromium("partitioned") as browser:
        yield browser


async def test_a_guest_asks_signs_up_reloads_and_keeps_the_conversation(
    kept_storage: Browser, guest_server: ChatServer, host_site: HostSite
) -> None:
    page = await new_page(kept_storage)
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, guest_server)
    # No form first: the visitor types at once.
    await frame.locator("#chat").wait_for()
    await expect(frame.locator("#who")).to_have_text("Guest")
    turn = await ask(frame, "How do I embed the widget on my site?")
    assert await wait_reply(frame, turn) == "stop"

    await frame.get_by_role("button", name="Sign up to keep this conversation").click()
    await frame.locator("#auth").wait_for()
    email = unique_email("guest")
    await frame.get_by_label("Email").fill(email)
    await frame.get_by_label("Password").fill(PASSWORD)
    await frame.locator("#auth-submit").click()
    await frame.locator("#chat").wait_for()
    await expect(frame.locator("#who")).to_have_text(email)
    await frame.locator('.msg.bot[data-state="stop"]').wait_for()

    await page.reload()
    frame = await open_widget(page, guest_server)
    await frame.locator('.msg.bot[data-state="stop"]').wait_for()
    assert await frame.locator(".msg.user").all_inner_texts() == [
        "How do I embed the widget on my site?"
    ]
    await expect(frame.locator("#who")).to_have_text(email)
    stored = await history(guest_server, await rest_token(guest_server, email))
    assert stored[0]["message"] == "How do I embed the widget on my site?"
    assert len(stored) == 2
    await page.context.close()


async def test_two_conversations_stay_apart(
    page: Page, guest_server: ChatServer, host_site: HostSite
) -> None:
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, guest_server)
    await frame.locator("#chat").wait_for()
    first = await ask(frame, "What does HISTORY_RETENTION_DAYS do?")
    await wait_reply(frame, first)

    await frame.get_by_role("button", name="Conversations").click()
    await frame.get_by_role("button", name="New conversation").click()
    await expect(frame.locator(".msg.user")).to_have_count(0)
    second = await ask(frame, "How do I embed the widget on my site?")
    await wait_reply(frame, second)
    assert await frame.locator(".msg.user").all_inner_texts() == [
        "How do I embed the widget on my site?"
    ]

    await frame.get_by_role("button", name="Conversations").click()
    items = frame.locator(".conv .conv-open")
    await expect(items).to_have_count(2)
    assert await items.all_inner_texts() == [
        "How do I embed the widget on my site?",
        "What does HISTORY_RETENTION_DAYS do?",
    ]
    # Rename the older one, then open it: only its own messages.
    await frame.get_by_role("button", name="Rename “What does HISTORY_RETENTION_DAYS do?”").click()
    await frame.get_by_label("New title").fill("Retention")
    await frame.get_by_label("New title").press("Enter")
    await expect(items.nth(1)).to_have_text("Retention")
    await items.nth(1).click()
    await frame.locator('.msg.bot[data-state="stop"]').wait_for()
    assert await frame.locator(".msg.user").all_inner_texts() == [
        "What does HISTORY_RETENTION_DAYS do?"
    ]
    # Delete the other one (two clicks: the second confirms).
    await frame.get_by_role("button", name="Conversations").click()
    delete = frame.get_by_role("button", name="Delete “How do I embed the widget on my site?”")
    await delete.click()
    await delete.click()
    await expect(items).to_have_count(1)
    await expect(items.first).to_have_text("Retention")


async def test_the_list_fits_a_phone(
    browser: Browser, guest_server: ChatServer, host_site: HostSite
) -> None:
    page = await new_page(browser, viewport={"width": 375, "height": 667}, is_mobile=True)
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, guest_server)
    await frame.locator("#chat").wait_for()
    turn = await ask(frame, "What does HISTORY_RETENTION_DAYS do?")
    await wait_reply(frame, turn)
    await frame.get_by_role("button", name="Conversations").click()
    item = frame.locator(".conv").first
    await item.wait_for()
    box = await item.bounding_box()
    width = await frame.evaluate("() => document.documentElement.clientWidth")
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 1
    for name in ("Rename", "Delete"):
        button = item.get_by_role("button", name=name)
        assert await button.is_visible()
    await page.context.close()


def identity_token(sub: str, email: str) -> str:
    """What the host site's backend does (README): sign the visitor's identity."""
    claims = {"sub": sub, "email": email, "exp": int(time.time()) + 600}
    return jwt.encode(claims, IDENTITY_SECRET, algorithm="HS256")


async def test_a_host_page_with_an_identity_token_chats_as_that_user(
    page: Page, guest_server: ChatServer, host_site: HostSite
) -> None:
    email = unique_email("known")
    token = identity_token(f"site-user-{time.time_ns()}", email)
    host_site.pages["known"] = host_page(
        guest_server.origin,
        attrs=f'data-identity-token="{token}"',
        body='<button id="bye" onclick="ChatWidget.logout()">Log out of the site</button>',
    )
    await page.goto(f"{host_site.origin}/known")
    frame = await open_widget(page, guest_server)
    await expect(frame.locator("#who")).to_have_text(email)
    turn = await ask(frame, "What does HISTORY_RETENTION_DAYS do?")
    assert await wait_reply(frame, turn) == "stop"
    # The page's own scripts never see the token again: not on the tag, not in storage.
    stolen = await page.evaluate("() => window.__steal()")
    assert token not in stolen["page"] and token not in stolen["own"]
    assert all(token not in seen for seen in stolen["seen"])

    await page.locator("#bye").click()
    await frame.locator("#auth").wait_for()
    assert await frame.locator(".msg").count() == 0
    await page.reload()
    host_site.pages["known"] = host_page(guest_server.origin)  # the site logged them out
    await page.goto(f"{host_site.origin}/known")
    frame = await open_widget(page, guest_server)
    await frame.locator("#chat").wait_for()
    await expect(frame.locator("#who")).to_have_text("Guest")
    assert await frame.locator(".msg.user").count() == 0


async def test_chat_widget_identify_carries_the_guests_conversation(
    page: Page, guest_server: ChatServer, host_site: HostSite
) -> None:
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, guest_server)
    await frame.locator("#chat").wait_for()
    turn = await ask(frame, "What does HISTORY_RETENTION_DAYS do?")
    await wait_reply(frame, turn)
    email = unique_email("later")
    token = identity_token(f"site-user-{time.time_ns()}", email)
    await page.evaluate("(t) => ChatWidget.identify(t)", token)
    await expect(frame.locator("#who")).to_have_text(email)
    await frame.locator('.msg.bot[data-state="stop"]').wait_for()
    assert await frame.locator(".msg.user").all_inner_texts() == [
        "What does HISTORY_RETENTION_DAYS do?"
    ]
