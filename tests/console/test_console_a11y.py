"""The console passes axe-core's audit: no serious or critical violation on any page, in any
of its states (login, refusal, every page with data, a confirmation, a phone's screen)."""

from __future__ import annotations

import asyncpg
import pytest
from playwright.async_api import Page, expect

from tests.accounts import unique_email
from tests.axe import assert_accessible, violations
from tests.console.rig import (
    Console,
    account,
    admin_page,
    chat,
    field,
    log_in,
    open_page,
)


async def test_login_and_refusal(page: Page, console: Console, db: asyncpg.Connection):
    await page.goto(console.url)
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await assert_accessible(page, "login")
    await log_in(page, console, console.admin_email, "wrong password here")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await assert_accessible(page, "login with an error")
    user = unique_email("user")
    await account(console, db, user)
    await log_in(page, console, user)
    await expect(page.get_by_role("heading", name="Not an administrator")).to_be_visible()
    await assert_accessible(page, "refusal")


async def test_every_page(page: Page, console: Console, admin_token: str, visitor: str):
    reply = await chat(console, visitor, "How do I descale a kettle?")
    await console.api(
        "PUT",
        f"/api/v1/chat/feedback/{reply['reply_id']}",
        visitor,
        {"rating": "down", "comment": "Not what I asked"},
    )
    await chat(console, visitor, "zzqv nothing answers this")
    await admin_page(page, console, admin_token)
    await assert_accessible(page, "dashboard")
    await page.get_by_role("button", name="Run the purge now").click()
    await expect(page.locator("#purge-result")).to_contain_text("Purge done")
    await assert_accessible(page, "dashboard after a purge")

    await open_page(page, "Conversations", "Conversations")
    # The newest conversation is this test's visitor's: a reply with sources and a rating.
    await page.locator("#conversation-list > li").first.get_by_role("button").click()
    await expect(page.locator("#conversation-messages > li")).to_have_count(4)
    await assert_accessible(page, "conversations")

    await open_page(page, "Unanswered", "Unanswered questions")
    await expect(page.locator("#unanswered-list > li").first).to_be_visible()
    await assert_accessible(page, "unanswered")

    await open_page(page, "Disliked answers", "Disliked answers")
    await expect(page.locator("#disliked-list > li").first).to_be_visible()
    await assert_accessible(page, "disliked")

    await open_page(page, "Knowledge base", "Knowledge base")
    await field(page, "Question").fill("How do I descale a kettle?")
    await page.get_by_role("button", name="Show the passages found").click()
    await page.get_by_role("button", name="Edit Kettle descaling").click()
    await field(page, "Content").fill("Descale the kettle weekly with vinegar.")
    await page.get_by_role("button", name="Save the changes").click()
    await expect(page.locator("#try-results .try.after")).to_be_visible()
    await page.get_by_role("button", name="Delete Teapot care").click()
    await expect(page.get_by_role("button", name="Keep it")).to_be_focused()  # the safe one
    await assert_accessible(page, "knowledge base")

    await open_page(page, "Audit log", "Audit log")
    await expect(page.locator("#audit-list > li").first).to_be_visible()
    await assert_accessible(page, "audit log")


async def test_on_a_phone(phone: Page, console: Console, admin_token: str):
    await phone.goto(console.url)
    await expect(phone.get_by_role("heading", name="Log in")).to_be_visible()
    await assert_accessible(phone, "phone: login")
    await admin_page(phone, console, admin_token)
    await assert_accessible(phone, "phone: dashboard")
    await open_page(phone, "Knowledge base", "Knowledge base")
    await expect(phone.locator("#doc-list > li").first).to_be_visible()
    await assert_accessible(phone, "phone: knowledge base")


async def test_the_audit_finds_a_broken_page(page: Page):
    """The audit itself works: a field without a label, a button without a name and pale
    text are found (so a clean result above means something)."""
    await page.set_content(
        '<html><body><input id="x"><button></button><p class="pale">pale</p></body></html>'
    )
    await page.add_style_tag(content=".pale { color: #ccc; }")
    found = {v["id"]: v["impact"] for v in await violations(page)}
    assert found["label"] == "critical"
    assert found["button-name"] == "critical"
    assert found["color-contrast"] == "serious"
    with pytest.raises(AssertionError, match="button-name"):
        await assert_accessible(page, "a broken page")
