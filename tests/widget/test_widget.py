"""A visitor on a host site uses the widget served by the chat server on another origin."""

from __future__ import annotations

import asyncio
import dataclasses

from playwright.async_api import Browser, Page

from tests.accounts import PASSWORD, unique_email
from tests.widget.browser import (
    ARTIFACTS,
    EXTRA_KNOWLEDGE,
    LONG_QUESTION,
    LOWEST_CONTRAST,
    ChatServer,
    HostSite,
    ask,
    chromium,
    history,
    last_reply,
    log_in,
    new_page,
    open_widget,
    reply_at,
    rest_token,
    sign_up,
    wait_reply,
    widget_frame,
)

# Records, in the widget's document, every state and text length of the newest reply.
WATCH_REPLIES = """() => {
  window.__updates = [];
  const log = document.getElementById("log");
  new MutationObserver(() => {
    const replies = log.querySelectorAll(".msg.bot[data-reply-to]");
    const r = replies[replies.length - 1];
    if (!r) return;
    window.__updates.push({
      state: r.dataset.state,
      typing: !!r.querySelector(".typing"),
      length: r.querySelector(".body").textContent.length,
    });
  }).observe(log, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


async def test_sign_up_ask_stream_sources_and_log_out(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("widget")
    await sign_up(frame, email, PASSWORD)
    notice = frame.locator("#verify-notice")
    await notice.wait_for()
    assert "verification link" in (await notice.inner_text())
    assert email in (await frame.locator("#who").inner_text())

    await frame.evaluate(WATCH_REPLIES)
    turn = await ask(frame, "How do I embed the widget on my site?")
    assert await wait_reply(frame, turn) == "stop"
    updates = await frame.evaluate("() => window.__updates")
    lengths = [u["length"] for u in updates if u["state"] == "streaming"]
    assert len(set(lengths)) >= 5, f"the answer arrived in {len(set(lengths))} DOM updates"
    assert lengths == sorted(lengths), "the streamed text only grows"
    assert any(u["typing"] and u["state"] == "waiting" for u in updates), "typing indicator"

    reply = last_reply(frame)
    text = await reply.locator(".body").inner_text()
    stored = await history(chat_server, await rest_token(chat_server, email))
    assert [m["is_user_message"] for m in stored] == [True, False]
    assert stored[1]["finish_reason"] == "stop"
    assert " ".join(text.split()) == " ".join(stored[1]["message"].replace("`", "").split())
    sources = await reply.locator(".sources li").all_inner_texts()
    assert sources and sources[0] == stored[1]["sources"][0]["topic"]
    announced = await frame.locator("#announcer").inner_text()
    assert announced.startswith("Assistant: ") and "(from “" in announced

    ratio, where = await frame.evaluate(LOWEST_CONTRAST)
    assert where and ratio >= 4.5, f"contrast {ratio:.2f} in {where}"

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "widget-desktop.png"))

    await frame.get_by_role("button", name="Log out").click()
    await frame.locator("#auth").wait_for()
    assert await frame.locator(".msg").count() == 0
    await log_in(frame, email, PASSWORD)
    await frame.locator(".msg.bot[data-reply-to]").first.wait_for()
    assert await frame.locator(".msg.user").count() == 1


async def test_stop_a_long_reply(page: Page, chat_server: ChatServer, host_site: HostSite) -> None:
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("stop")
    await sign_up(frame, email, PASSWORD)
    turn = await ask(frame, LONG_QUESTION)
    await frame.locator('.msg.bot[data-state="streaming"]').wait_for()
    stop = frame.get_by_role("button", name="Stop")
    await stop.click()
    assert await wait_reply(frame, turn, ("cancelled",)) == "cancelled"
    await stop.wait_for(state="hidden")
    assert "Stopped." in await last_reply(frame).inner_text()
    stored = await history(chat_server, await rest_token(chat_server, email))
    assert stored[-1]["finish_reason"] == "cancelled"
    shown = await last_reply(frame).locator(".body").inner_text()
    assert 0 < len(stored[-1]["message"]) < 300
    assert " ".join(shown.split()) == " ".join(stored[-1]["message"].split())


async def test_history_after_reload(
    storage_browser: tuple[str, Browser], chat_server: ChatServer, host_site: HostSite
) -> None:
    """Stays logged in where third-party storage is allowed; else logs in again. Either
    way the conversation is back."""
    storage, browser = storage_browser
    page = await new_page(browser)
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("reload")
    await sign_up(frame, email, PASSWORD)
    turn = await ask(frame, "What does HISTORY_RETENTION_DAYS do?")
    await wait_reply(frame, turn)
    before = await last_reply(frame).locator(".body").inner_text()

    await page.reload()
    frame = await open_widget(page, chat_server)
    if storage == "refused":
        await frame.locator("#auth").wait_for()
        await log_in(frame, email, PASSWORD)
    else:
        assert await frame.locator("#auth").is_hidden()
    await frame.locator('.msg.bot[data-state="stop"]').wait_for()
    assert await frame.locator(".msg.user").all_inner_texts() == [
        "What does HISTORY_RETENTION_DAYS do?"
    ]
    assert await last_reply(frame).locator(".body").inner_text() == before
    await page.context.close()


async def test_reply_resumes_after_a_dropped_connection(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("drop")
    await sign_up(frame, email, PASSWORD)
    await frame.evaluate(WATCH_REPLIES)
    turn = await ask(frame, LONG_QUESTION)
    await frame.locator('.msg.bot[data-state="streaming"]').wait_for()
    chat_server.drop()
    await frame.locator("body[data-connection=waiting]").wait_for()
    assert "Reconnecting" in await frame.locator("#status").inner_text()
    assert await wait_reply(frame, turn) == "stop"
    await frame.locator("body[data-connection=ready]").wait_for()

    stored = await history(chat_server, await rest_token(chat_server, email))
    assert stored[-1]["finish_reason"] == "stop"
    shown = await last_reply(frame).locator(".body").inner_text()
    assert " ".join(shown.split()) == " ".join(stored[-1]["message"].split())
    lengths = [u["length"] for u in await frame.evaluate("() => window.__updates")]
    assert lengths == sorted(lengths), "resumed where it stopped, nothing twice"


async def test_server_restart_and_a_message_typed_while_offline(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("restart")
    await sign_up(frame, email, PASSWORD)
    await ask(frame, LONG_QUESTION)
    await frame.locator('.msg.bot[data-state="streaming"]').wait_for()

    await chat_server.stop()
    await frame.locator("body[data-connection=waiting]").wait_for()
    await ask(frame, "How do I log in?")
    queued = frame.locator('.msg.user[data-status="queued"]')
    await queued.wait_for()
    assert "Waiting for the connection" in await queued.inner_text()
    await asyncio.sleep(0.5)
    await chat_server.start()

    await frame.locator('.msg.user[data-status="acked"]').nth(1).wait_for()
    replies = frame.locator(".msg.bot[data-reply-to]")
    await replies.nth(1).and_(frame.locator('[data-state="stop"]')).wait_for()
    # The reply cut by the shutdown (it had 0.5 s to finish, it needs about 4) is shown
    # as it was stored, and marked as interrupted.
    first_state = await replies.nth(0).get_attribute("data-state")
    assert first_state == "error"
    assert "This reply was interrupted." in await replies.nth(0).inner_text()

    stored = await history(chat_server, await rest_token(chat_server, email))
    questions = [m["message"] for m in stored if m["is_user_message"]]
    assert questions == [LONG_QUESTION, "How do I log in?"], "sent exactly once"
    answers = [m for m in stored if not m["is_user_message"]]
    assert len(answers) == 2
    assert answers[0]["finish_reason"] == first_state
    shown = await replies.nth(0).locator(".body").inner_text()
    assert " ".join(shown.split()) == " ".join(answers[0]["message"].split())
    assert await frame.locator(".msg.user").count() == 2
    assert len(answers[0]["message"]) < len(EXTRA_KNOWLEDGE[0]["content"]), "cut short"


async def test_a_message_queued_offline_survives_closing_the_tab(
    chat_server: ChatServer, host_site: HostSite
) -> None:
    """Where the widget may keep (partitioned) storage, a message typed while the server
    is away is kept; the next visit sends it, once."""
    async with chromium("partitioned") as browser:
        page = await new_page(browser)
        await page.goto(f"{host_site.origin}/index")
        frame = await open_widget(page, chat_server)
        email = unique_email("outbox")
        await sign_up(frame, email, PASSWORD)

        await chat_server.stop()
        await frame.locator("body[data-connection=waiting]").wait_for()
        await ask(frame, "How do I log in?")
        await frame.locator('.msg.user[data-status="queued"]').wait_for()
        context = page.context
        await page.close()
        await chat_server.start()

        page = await context.new_page()
        await page.goto(f"{host_site.origin}/index")
        frame = await open_widget(page, chat_server)
        await frame.locator('.msg.user[data-status="acked"]').wait_for()
        await frame.locator('.msg.bot[data-state="stop"]').wait_for()
        stored = await history(chat_server, await rest_token(chat_server, email))
        assert [m["message"] for m in stored if m["is_user_message"]] == ["How do I log in?"]
        assert len([m for m in stored if not m["is_user_message"]]) == 1
        await context.close()


async def test_the_widget_renews_its_token_before_it_expires(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    """With one-minute tokens the widget asks for a fresh one (it renews two minutes
    ahead, at least 5 s after getting one) and hands it to the open WebSocket."""
    await chat_server.stop()
    chat_server.settings = dataclasses.replace(chat_server.settings, access_token_expire_minutes=1)
    await chat_server.start()
    refreshed: list[int] = []
    page.on(
        "response",
        lambda r: refreshed.append(r.status) if r.url.endswith("/api/v1/auth/refresh") else None,
    )
    auth_frames: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent",
            lambda payload: auth_frames.append(payload) if '"auth"' in str(payload) else None,
        ),
    )
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    await sign_up(frame, unique_email("renew"), PASSWORD)
    for _ in range(200):  # about 5 s, then the request
        if refreshed and len(auth_frames) >= 2:
            break
        await asyncio.sleep(0.05)
    assert refreshed == [200]
    # The first auth frame opened the connection; the second carries the fresh token.
    assert len(auth_frames) == 2 and auth_frames[0] != auth_frames[1]
    turn = await ask(frame, "How do I log in?")
    await wait_reply(frame, turn)


async def test_a_graceful_restart_lets_the_reply_finish_and_the_widget_shows_it(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    """SIGTERM-like stop with time enough: the reply in flight is generated to the end
    and stored before the sockets get 1001; after the restart the widget resumes it and
    shows it whole, each token once."""
    await chat_server.stop()
    chat_server.settings = dataclasses.replace(chat_server.settings, shutdown_timeout_s=15.0)
    await chat_server.start()
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("graceful")
    await sign_up(frame, email, PASSWORD)
    await frame.evaluate(WATCH_REPLIES)
    turn = await ask(frame, LONG_QUESTION)
    await frame.locator('.msg.bot[data-state="streaming"]').wait_for()

    await chat_server.restart()
    assert await wait_reply(frame, turn) == "stop"
    stored = await history(chat_server, await rest_token(chat_server, email))
    assert [m["finish_reason"] for m in stored if not m["is_user_message"]] == ["stop"]
    shown = await last_reply(frame).locator(".body").inner_text()
    assert " ".join(shown.split()) == " ".join(stored[-1]["message"].split())
    assert len(stored[-1]["message"]) >= len(EXTRA_KNOWLEDGE[0]["content"]), "not cut short"
    lengths = [u["length"] for u in await frame.evaluate("() => window.__updates")]
    assert lengths == sorted(lengths), "resumed where it stopped, nothing twice"


async def test_a_message_whose_ack_was_lost_is_stored_once(
    page: Page, chat_server: ChatServer, host_site: HostSite
) -> None:
    """The ack never arrives; after the reconnect the widget sends the message again with
    the same id, and the server answers it without storing it twice."""
    await page.goto(f"{host_site.origin}/index")
    frame = await open_widget(page, chat_server)
    email = unique_email("lost-ack")
    await sign_up(frame, email, PASSWORD)
    token = await rest_token(chat_server, email)
    await frame.locator("body[data-connection=ready]").wait_for()

    chat_server.relay.muted = True
    turn = await ask(frame, "How do I log in?")
    for _ in range(100):
        if await history(chat_server, token):
            break
        await asyncio.sleep(0.05)
    assert [m["message"] for m in await history(chat_server, token)][:1] == ["How do I log in?"]
    assert await frame.locator(".msg.user").get_attribute("data-status") == "sending"
    chat_server.relay.muted = False
    chat_server.drop()

    assert await wait_reply(frame, turn) == "stop"
    stored = await history(chat_server, token)
    assert [m["is_user_message"] for m in stored] == [True, False]
    assert await frame.locator(".msg.user").count() == 1
    assert await frame.locator(".msg.user").get_attribute("data-status") == "acked"
    shown = await reply_at(frame, turn).locator(".body").inner_text()
    assert " ".join(shown.split()) == " ".join(stored[1]["message"].split())


async def test_keyboard_only(page: Page, chat_server: ChatServer, host_site: HostSite) -> None:
    await page.goto(f"{host_site.origin}/index")
    await page.locator("#host-button").focus()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    frame = await widget_frame(page, chat_server)
    await frame.locator("#auth:not([hidden])").wait_for()
    await frame.locator("#email:focus").wait_for()
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")  # "Sign up"
    assert await frame.locator("#mode-signup").get_attribute("aria-pressed") == "true"
    await page.keyboard.press("Tab")
    await page.keyboard.type(unique_email("keys"))
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await frame.locator("#input:focus").wait_for()
    await page.keyboard.type("What is ALLOWED_ORIGINS?")
    await page.keyboard.press("Enter")
    await wait_reply(frame, 0)
    await page.keyboard.press("Escape")
    await frame.page.locator("[data-chat-widget] .p[hidden]").wait_for(state="attached")
    focused = await page.evaluate(
        "() => document.activeElement.shadowRoot?.activeElement?.getAttribute('aria-label')"
    )
    assert focused == "Open chat", "focus returns to the launcher"
