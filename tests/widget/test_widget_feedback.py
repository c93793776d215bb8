"""Thumbs up and down under each finished reply: by mouse and keyboard, a comment after a
thumbs down, and the rating still there after a reload."""

from __future__ import annotations

import asyncio

from playwright.async_api import Browser, expect

from tests.accounts import PASSWORD, unique_email
from tests.widget.browser import (
    ChatServer,
    HostSite,
    ask,
    history,
    last_reply,
    log_in,
    new_page,
    open_widget,
    rest_token,
    sign_up,
    wait_reply,
)

TIMEOUT_MS = 15_000


async def test_rate_a_reply_comment_and_see_it_after_a_reload(
    browser: Browser, chat_server: ChatServer, host_site: HostSite, db
) -> None:
    page = await new_page(browser)
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("thumbs")
    await sign_up(frame, email, PASSWORD)
    turn = await ask(frame, "What does HISTORY_RETENTION_DAYS do?")
    await wait_reply(frame, turn)
    reply = last_reply(frame)
    up = reply.get_by_role("button", name="Helpful", exact=True)
    down = reply.get_by_role("button", name="Not helpful")
    await expect(up).to_have_attribute("aria-pressed", "false")

    # A thumbs up from the keyboard, then taken back.
    await up.focus()
    await page.keyboard.press("Enter")
    await expect(up).to_have_attribute("aria-pressed", "true")
    token = await rest_token(chat_server, email)
    rows = [r for r in await history(chat_server, token) if not r["is_user_message"]]
    await expect_feedback(chat_server, token, "up")
    await up.click()
    await expect(up).to_have_attribute("aria-pressed", "false")
    await expect_feedback(chat_server, token, None)

    # A thumbs down asks for an optional comment, which is sent with it.
    await down.click()
    await expect(down).to_have_attribute("aria-pressed", "true")
    comment = reply.get_by_role("textbox", name="What was missing? (optional)")
    await expect(comment).to_be_focused()
    await comment.fill("It did not say how to change it")
    await page.keyboard.press("Enter")
    await expect(comment).to_be_hidden()
    await expect_feedback(chat_server, token, "down")
    comment_stored = await db.fetchval(
        "SELECT comment FROM feedback WHERE reply_id = $1", rows[-1]["id"]
    )
    assert comment_stored == "It did not say how to change it"

    await page.reload()
    frame = await open_widget(page, chat_server)
    await frame.locator("#auth").wait_for()  # this browser refuses the frame's storage
    await log_in(frame, email, PASSWORD)
    await frame.locator('.msg.bot[data-state="stop"]').wait_for()
    down = last_reply(frame).get_by_role("button", name="Not helpful")
    await expect(down).to_have_attribute("aria-pressed", "true", timeout=TIMEOUT_MS)
    await page.context.close()


async def expect_feedback(server: ChatServer, token: str, rating: str | None) -> None:
    """The server's record of the one reply's rating becomes `rating`."""
    for _ in range(100):
        rows = [r for r in await history(server, token) if not r["is_user_message"]]
        if rows[-1]["feedback"] == rating:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"feedback is {rows[-1]['feedback']!r}, not {rating!r}")
