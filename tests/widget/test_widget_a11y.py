"""The widget passes axe-core's audit, inside its host page as sites embed it: the launcher
(in the host page's shadow root) and the chat panel (its iframe), logged out and in,
with a streamed reply and its sources; no serious or critical violation."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.accounts import PASSWORD, unique_email
from tests.axe import assert_accessible
from tests.widget.browser import ChatServer, HostSite, ask, open_widget, sign_up, wait_reply

LAUNCHER = {"include": [["[data-chat-widget]"]]}


async def test_the_widget_in_its_host_page(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    await page.goto(f"{host_site.origin}/index")
    await page.locator("[data-chat-widget] button").wait_for()
    await assert_accessible(page, "launcher, closed", LAUNCHER)
    frame = await open_widget(page, chat_server)
    await assert_accessible(page, "launcher, open", LAUNCHER)
    await assert_accessible(frame, "panel: log in")
    await frame.locator("#mode-signup").click()
    await expect(frame.locator("#auth-submit")).to_have_text("Sign up")
    await assert_accessible(frame, "panel: sign up")
    await frame.locator("#mode-login").click()

    await sign_up(frame, unique_email("a11y"), PASSWORD)
    await expect(frame.locator("#verify-notice")).to_be_visible()
    await assert_accessible(frame, "panel: chat, verification notice")
    turn = await ask(frame, "How do I embed the widget?")
    await wait_reply(frame, turn)
    await expect(frame.locator(".turn .sources").first).to_be_visible()
    await assert_accessible(frame, "panel: a reply with its sources")


async def test_the_conversation_list_and_a_guest(page: Page, serve_chat, host_site: HostSite):
    async with serve_chat(allow_guests=True) as server:
        await page.goto(f"{host_site.origin}/index")
        frame = await open_widget(page, server)
        await frame.locator("#chat").wait_for()
        await expect(frame.locator("#guest-notice")).to_be_visible()
        question = "What does HISTORY_RETENTION_DAYS do?"
        turn = await ask(frame, question)
        await wait_reply(frame, turn)
        await assert_accessible(frame, "panel: a guest's chat")

        await frame.get_by_role("button", name="Conversations").click()
        await expect(frame.locator(".conv .conv-open")).to_have_count(1)
        await assert_accessible(frame, "panel: the conversation list")
        await frame.get_by_role(
            "button", name="Rename “What does HISTORY_RETENTION_DAYS do?”"
        ).click()
        await expect(frame.get_by_label("New title")).to_be_visible()
        await assert_accessible(frame, "panel: renaming a conversation")
