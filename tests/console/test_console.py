"""The operator console at /admin, in Chromium: every page, every action, who sees what."""

from __future__ import annotations

import re
import uuid

import asyncpg
from playwright.async_api import Page, Route, expect

from server.static import NO_FRAMING
from tests.accounts import unique_email
from tests.console.rig import (
    PWN_IMG,
    PWN_SVG,
    XSS_DOC,
    Console,
    account,
    admin_page,
    chat,
    field,
    log_in,
    no_script_ran,
    open_page,
    running_console,
    screenshot,
)

ADMIN_API = "/api/v1/admin/"
SAMOVAR = re.compile(r"^samovar(#\d+)?$")  # the document, or one of its passages


def watch_admin_answers(page: Page) -> list[tuple[str, int]]:
    """Every answer of the admin API the page receives: (url, status)."""
    seen: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: seen.append((r.url, r.status)) if ADMIN_API in r.url else None,
    )
    return seen


# ---- who sees what -------------------------------------------------------------------------


async def test_a_guest_of_the_page_sees_a_login_form_and_no_data(page: Page, console: Console):
    answers = watch_admin_answers(page)
    response = await page.goto(console.url)
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert f"frame-ancestors {NO_FRAMING}" in csp
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.get_by_role("navigation")).to_be_hidden()
    for section in ("#page-dashboard", "#page-knowledge", "#page-audit"):
        await expect(page.locator(section)).to_be_hidden()
    assert await page.locator("#stats dd, #doc-list li, #audit-list li").count() == 0
    # A fragment naming a page shows the login all the same.
    await page.goto(console.url + "#knowledge")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.locator("#page-knowledge")).to_be_hidden()
    assert [status for _, status in answers if status < 300] == []
    await screenshot(page, "login")


async def test_a_wrong_password_is_said_and_nothing_shown(
    page: Page, console: Console, admin_token: str
):
    await log_in(page, console, console.admin_email, "not the password at all")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await expect(page.get_by_role("navigation")).to_be_hidden()


async def test_a_user_who_is_not_an_admin_is_refused(
    page: Page, console: Console, db: asyncpg.Connection
):
    answers = watch_admin_answers(page)
    user = unique_email("user")
    await account(console, db, user)  # verified, but not on ADMIN_EMAILS
    await log_in(page, console, user)
    await expect(page.get_by_role("heading", name="Not an administrator")).to_be_visible()
    await expect(page.locator("#refused-text")).to_contain_text("ADMIN_EMAILS")
    await expect(page.get_by_role("navigation")).to_be_hidden()
    assert await page.locator("#stats dd").count() == 0
    assert answers and all(status == 403 for _, status in answers)
    # Nothing of the refused account is kept: a reload shows the login form.
    assert await page.evaluate("() => sessionStorage.length") == 0
    await page.reload()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await screenshot(page, "refused")


async def test_an_unverified_address_on_the_list_is_refused(
    page: Page, console: Console, db: asyncpg.Connection
):
    await account(console, db, console.admin_email, verified=False)
    await log_in(page, console, console.admin_email)
    await expect(page.get_by_role("heading", name="Not an administrator")).to_be_visible()
    assert await page.locator("#stats dd").count() == 0


async def test_the_token_stays_out_of_the_address_and_a_reload_keeps_the_session(
    page: Page, console: Console, admin_token: str
):
    await admin_page(page, console, admin_token)
    token = await page.evaluate("() => sessionStorage.getItem('chat-admin:token')")
    assert token and token not in page.url
    await open_page(page, "Audit log", "Audit log")
    await page.reload()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0
    assert await page.locator("#audit-list li").count() == 0


async def test_an_open_console_renews_its_token(
    page: Page, make_settings, tmp_path, db: asyncpg.Connection
):
    """Tokens last ACCESS_TOKEN_EXPIRE_MINUTES (1 here): the console renews its own before
    then (at most 2 minutes early), and after a reload, at once."""
    async with running_console(make_settings, tmp_path, access_token_expire_minutes=1) as console:
        admin_token = await account(console, db, console.admin_email)
        await admin_page(page, console, admin_token)
        kept = "() => sessionStorage.getItem('chat-admin:token')"
        first = await page.evaluate(kept)
        await page.wait_for_function(f"(first) => ({kept})() !== first", arg=first)
        renewed = await page.evaluate(kept)
        await page.reload()
        await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        await page.wait_for_function(f"(t) => ({kept})() !== t", arg=renewed)
        await open_page(page, "Audit log", "Audit log")


# ---- the dashboard and the purge -------------------------------------------------------------


async def test_dashboard_shows_the_last_day_and_runs_the_purge(
    page: Page, console: Console, admin_token: str, visitor: str
):
    answered = await chat(console, visitor, "How do I care for a teapot?")
    await chat(console, visitor, f"zyxwvut {uuid.uuid4().hex}")
    await console.api(
        "PUT", f"/api/v1/chat/feedback/{answered['reply_id']}", visitor, {"rating": "down"}
    )
    await admin_page(page, console, admin_token)
    stats = await console.api("GET", "/api/v1/admin/stats", admin_token)
    figures = page.locator("#stats")
    for term, value in [
        ("Messages", stats["messages_24h"]),
        ("Unanswered questions", stats["unanswered_24h"]),
        ("Answers disliked", stats["feedback_24h"]["down"]),
        ("Users", stats["users"]),
    ]:
        await expect(figures.locator(f"dt:text-is('{term}') + dd")).to_have_text(str(value))
    assert stats["feedback_24h"]["down"] >= 1 and stats["unanswered_24h"] >= 1
    p50 = await figures.locator("dt:text-is('First token, median (p50)') + dd").inner_text()
    assert p50.endswith(" ms"), p50
    purge = page.locator("#purge")
    await expect(purge.locator("dt:text-is('Last run (this instance)') + dd")).to_have_text(
        "none yet"
    )
    await expect(purge.locator("dt:text-is('Next run') + dd")).to_contain_text("UTC")
    await expect(purge.locator("dt:text-is('Schedule (UTC)') + dd")).to_have_text("17 3 * * *")
    await screenshot(page, "dashboard")

    await page.get_by_role("button", name="Run the purge now").click()
    await expect(page.locator("#purge-result")).to_contain_text("Purge done:")
    await expect(purge.locator("dt:text-is('Last run (this instance)') + dd")).to_contain_text(
        "deleted"
    )
    status = await console.api("GET", "/api/v1/admin/purge", admin_token)
    assert status["last_run"]["status"] == "ok"
    audit = await console.api("GET", "/api/v1/admin/audit", admin_token)
    assert audit[0]["action"] == "purge run" and audit[0]["admin"] == console.admin_email


# ---- the knowledge base ------------------------------------------------------------------------


async def test_add_edit_delete_and_try_a_question_before_and_after(
    page: Page, console: Console, admin_token: str
):
    await admin_page(page, console, admin_token)
    await open_page(page, "Knowledge base", "Knowledge base")
    docs = page.locator("#doc-list > li")
    await expect(docs).to_have_count(4)
    await expect(docs.filter(has_text="Teapot care")).to_contain_text("never use soap")

    # Try a question nothing answers yet.
    question = "How does a samovar heat its water?"
    await field(page, "Question").fill(question)
    await page.get_by_role("button", name="Show the passages found").click()
    first = page.locator("#try-results .try.now")
    await expect(first).to_contain_text(f"Passages for “{question}”")
    assert await first.locator('[data-id^="samovar"]').count() == 0

    # Add a document that answers it: the same question is tried again, before and after.
    await field(page, "Id").fill("samovar")
    await field(page, "Topic").fill("Samovar heating")
    await field(page, "Content").fill("A samovar heats water with burning charcoal.")
    await page.get_by_role("button", name="Add the document").click()
    await expect(page.locator("#status")).to_have_text("Added “Samovar heating” (samovar).")
    await expect(docs).to_have_count(5)
    before = page.locator("#try-results .try.before")
    after = page.locator("#try-results .try.after")
    await expect(before).to_contain_text("Before adding “Samovar heating”")
    await expect(after.locator(".passage").first).to_have_attribute("data-id", SAMOVAR)
    assert await before.locator('[data-id^="samovar"]').count() == 0
    await expect(after.locator(".passage").first).to_contain_text("score")

    # Edit it: the passage found changes with it.
    await page.get_by_role("button", name="Edit Samovar heating").click()
    await expect(field(page, "Id")).to_have_value("samovar")
    await expect(field(page, "Id")).to_have_attribute("readonly", "")
    await field(page, "Content").fill("A samovar heats its water with pine cones.")
    await page.get_by_role("button", name="Save the changes").click()
    await expect(page.locator("#status")).to_have_text("Saved “Samovar heating” (samovar).")
    await expect(before).to_contain_text("Before editing “Samovar heating”")
    await expect(before.locator('[data-id^="samovar"]')).to_contain_text("charcoal")
    await expect(after.locator('[data-id^="samovar"]')).to_contain_text("pine cones")
    await expect(docs.filter(has_text="Samovar heating")).to_contain_text("pine cones")
    stored = await console.api("GET", "/api/v1/admin/documents/samovar", admin_token)
    assert stored["content"] == "A samovar heats its water with pine cones."
    await screenshot(page, "knowledge")

    # Delete it, after a confirmation that can be declined.
    await page.get_by_role("button", name="Delete Samovar heating").click()
    await page.get_by_role("button", name="Keep it").click()
    await expect(docs).to_have_count(5)
    await page.get_by_role("button", name="Delete Samovar heating").click()
    await expect(page.locator(".confirm")).to_have_text("Delete “Samovar heating” for good?")
    await page.get_by_role("button", name="Yes, delete it").click()
    await expect(page.locator("#status")).to_have_text("Deleted “Samovar heating” (samovar).")
    await expect(docs).to_have_count(4)
    await expect(after).to_be_visible()
    assert await after.locator('[data-id^="samovar"]').count() == 0
    listed = await console.api("GET", "/api/v1/admin/documents", admin_token)
    assert "samovar" not in [d["id"] for d in listed]

    # Each change is in the audit log, by this admin.
    await open_page(page, "Audit log", "Audit log")
    entries = page.locator("#audit-list > li")
    await expect(entries.nth(0)).to_contain_text("document deleted: samovar")
    await expect(entries.nth(1)).to_contain_text("document replaced: samovar")
    await expect(entries.nth(2)).to_contain_text("document added: samovar")
    await expect(entries.nth(0)).to_contain_text(console.admin_email)
    await screenshot(page, "audit")


async def test_a_refused_document_says_why(page: Page, console: Console, admin_token: str):
    await admin_page(page, console, admin_token)
    await open_page(page, "Knowledge base", "Knowledge base")
    await field(page, "Id").fill("teapots")  # taken
    await field(page, "Topic").fill("Another teapot")
    await field(page, "Content").fill("Something.")
    await page.get_by_role("button", name="Add the document").click()
    await expect(page.locator("#doc-error")).to_contain_text("exists")
    await field(page, "Id").fill("fresh-id")
    await field(page, "Topic").fill("   ")
    await page.get_by_role("button", name="Add the document").click()
    await expect(page.locator("#doc-error")).to_contain_text("topic")
    await expect(page.locator("#doc-list > li")).to_have_count(4)


async def test_an_unanswered_question_opens_the_form_to_write_its_document(
    page: Page, console: Console, admin_token: str, visitor: str
):
    word = f"quixotry{uuid.uuid4().hex[:8]}"
    await chat(console, visitor, f"What is {word}?")
    await chat(console, visitor, f"what  IS {word}?")  # the same question, told apart by nothing
    await admin_page(page, console, admin_token)
    await open_page(page, "Unanswered", "Unanswered questions")
    item = page.locator("#unanswered-list > li").filter(has_text=word)
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("Asked 2 times")
    await screenshot(page, "unanswered")

    # The conversation it was last asked in is a click away.
    await item.get_by_role("button", name="Read the conversation").click()
    await expect(page.get_by_role("heading", name="Conversations")).to_be_visible()
    asked = page.locator("#conversation-messages > li.question")
    await expect(asked.last).to_contain_text(f"what  IS {word}?")
    await open_page(page, "Unanswered", "Unanswered questions")

    await item.get_by_role("button", name="Write the missing document").click()
    await expect(page.get_by_role("heading", name="Knowledge base")).to_be_visible()
    assert page.url.endswith("#knowledge")
    await expect(field(page, "Topic")).to_have_value(re.compile(word, re.IGNORECASE))
    topic = await field(page, "Topic").input_value()
    await expect(field(page, "Question")).to_have_value(topic)
    await expect(field(page, "Content")).to_be_focused()

    await page.get_by_role("button", name="Show the passages found").click()
    await expect(page.locator("#try-results .try.now")).to_contain_text(
        "The retriever finds nothing."
    )
    await field(page, "Content").fill(f"{word.capitalize()} is a made-up word for tests.")
    await page.get_by_role("button", name="Add the document").click()
    after = page.locator("#try-results .try.after")
    await expect(after.locator(".passage").first).to_contain_text("made-up word")
    await expect(page.locator("#try-results .try.before")).to_contain_text(
        "The retriever finds nothing."
    )


# ---- disliked answers, and text from the server shown as text ------------------------------


async def test_disliked_answers_show_question_answer_sources_and_comment(
    page: Page, console: Console, admin_token: str, visitor: str
):
    reply = await chat(console, visitor, "How do I descale a kettle?")
    comment = f"Too short {PWN_IMG} {uuid.uuid4().hex[:6]}"
    await console.api(
        "PUT",
        f"/api/v1/chat/feedback/{reply['reply_id']}",
        visitor,
        {"rating": "down", "comment": comment},
    )
    liked_question = f"How do I care for a teapot? {comment[-6:]}"
    liked = await chat(console, visitor, liked_question)
    await console.api(
        "PUT", f"/api/v1/chat/feedback/{liked['reply_id']}", visitor, {"rating": "up"}
    )
    await admin_page(page, console, admin_token)
    await open_page(page, "Disliked answers", "Disliked answers")
    item = page.locator("#disliked-list > li").filter(has_text=comment)
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("How do I descale a kettle?")
    await expect(item).to_contain_text(reply["response"][:40])
    await expect(item.locator(".sources")).to_contain_text("Kettle descaling")
    await expect(item.locator(".sources")).to_contain_text("(kettles")
    assert await page.locator("#disliked-list > li").filter(has_text=liked_question).count() == 0
    await no_script_ran(page)
    await screenshot(page, "disliked")


async def test_html_from_the_server_is_shown_as_text(
    page: Page, console: Console, admin_token: str, visitor: str
):
    question = f"zzqv {uuid.uuid4().hex[:6]} {PWN_SVG}"  # unanswered, with HTML in it
    await chat(console, visitor, question)
    await admin_page(page, console, admin_token)
    await open_page(page, "Unanswered", "Unanswered questions")
    await expect(page.locator("#unanswered-list > li").filter(has_text=question)).to_have_count(1)
    await no_script_ran(page)

    await open_page(page, "Knowledge base", "Knowledge base")
    doc = page.locator('#doc-list > li[data-id="xss-doc"]')
    await expect(doc.locator("h3")).to_have_text(XSS_DOC["topic"])
    await expect(doc).to_contain_text("<b>not bold</b>")
    await field(page, "Question").fill("gooseberry jam pectin")
    await page.get_by_role("button", name="Show the passages found").click()
    passage = page.locator("#try-results .passage").first
    await expect(passage).to_contain_text(XSS_DOC["topic"])
    await expect(passage).to_contain_text(PWN_IMG)
    await page.get_by_role("button", name=f"Edit {XSS_DOC['topic']}").click()
    await expect(page.get_by_role("heading", name=f"Edit “{XSS_DOC['topic']}”")).to_be_visible()
    await expect(field(page, "Topic")).to_have_value(XSS_DOC["topic"])
    assert await page.locator("main b").count() == 0
    await no_script_ran(page)


# ---- conversations ------------------------------------------------------------------------------


async def test_conversations_search_and_read_one(
    page: Page, console: Console, admin_token: str, db: asyncpg.Connection
):
    email = unique_email("visitor")
    visitor = await account(console, db, email)
    question = "How do I care for a teapot?"
    first = await chat(console, visitor, question)
    assert first["sources"], first
    await console.api(
        "PUT", f"/api/v1/chat/feedback/{first['reply_id']}", visitor, {"rating": "down"}
    )
    kettles_title = f"Kettles {uuid.uuid4().hex[:6]} {PWN_SVG}"
    kettles = await console.api(
        "POST", "/api/v1/chat/conversations", visitor, {"title": kettles_title}
    )
    await console.api(
        "POST",
        "/api/v1/chat/chat",
        visitor,
        {"message": "How do I descale a kettle?", "conversation_id": kettles["id"]},
    )

    await admin_page(page, console, admin_token)
    await open_page(page, "Conversations", "Conversations")
    items = page.locator("#conversation-list > li")
    await expect(items.first).to_be_visible()
    # By the user's email (case ignored): both, most recently active first.
    await field(page, "User's email").fill(email.upper())
    await page.get_by_role("button", name="Search").click()
    await expect(items).to_have_count(2)
    await expect(items.nth(0).get_by_role("button")).to_have_text(kettles_title)
    await expect(items.nth(0)).to_contain_text(f"{email} · 2 messages ·")
    await expect(items.nth(1)).to_contain_text(f"{email} · 2 messages, 1 disliked")
    # And by text in its messages: only the first.
    await field(page, "Text in its messages").fill("TEAPOT")
    await page.get_by_role("button", name="Search").click()
    await expect(items).to_have_count(1)
    await expect(items.first.get_by_role("button")).to_have_text(question)

    await items.first.get_by_role("button").click()
    shown = page.locator("#conversation")
    await expect(shown.get_by_role("heading", level=2)).to_have_text(question)
    await expect(shown.locator("#conversation-user")).to_have_text(f"With {email}")
    messages = shown.locator("#conversation-messages > li")
    await expect(messages).to_have_count(2)
    await expect(messages.nth(0)).to_contain_text(question)
    await expect(messages.nth(1)).to_contain_text(first["response"][:40])
    sources = messages.nth(1).locator(".sources")
    await expect(sources).to_contain_text("Teapot care (teapots")
    shown_score = re.search(r"score ([\d.]+)", await sources.locator("li").first.inner_text())
    assert shown_score and float(shown_score[1]) == first["sources"][0]["score"]
    await expect(messages.nth(1)).to_contain_text("The visitor disliked this answer.")
    await no_script_ran(page)
    await screenshot(page, "conversations")

    # The read is in the audit log.
    await open_page(page, "Audit log", "Audit log")
    conversation_id = await db.fetchval(
        "SELECT conversation_id FROM chat_history WHERE id = $1", first["message_id"]
    )
    await expect(page.locator("#audit-list > li").first).to_contain_text(
        f"conversation read: {conversation_id}"
    )


# A server without the conversations endpoints (older than them) answers 404 there: the
# page says so, through the browser's own request routing.


async def test_conversations_not_available_while_the_endpoint_is_missing(
    page: Page, console: Console, admin_token: str
):
    async def missing(route: Route) -> None:
        await route.fulfill(status=404, json={"detail": "Not Found"})

    await page.route("**/api/v1/admin/conversations**", missing)
    await admin_page(page, console, admin_token)
    await open_page(page, "Conversations", "Conversations")
    await expect(page.locator("#conversations-empty")).to_have_text(
        "Conversations are not available on this server yet."
    )
    await expect(page.get_by_role("search")).to_be_hidden()
    # The rest of the console goes on working, and the session is kept.
    await open_page(page, "Audit log", "Audit log")


# ---- a phone ----------------------------------------------------------------------------------


async def test_every_page_fits_a_phone(
    phone: Page, console: Console, admin_token: str, visitor: str
):
    reply = await chat(console, visitor, "How do I descale a kettle?")
    await console.api(
        "PUT",
        f"/api/v1/chat/feedback/{reply['reply_id']}",
        visitor,
        {"rating": "down", "comment": "x" * 300},
    )
    await chat(console, visitor, "a" * 400)  # a long unanswered question
    await admin_page(phone, console, admin_token)
    pages = [
        ("Dashboard", "Dashboard", "dashboard"),
        ("Conversations", "Conversations", "conversations"),
        ("Unanswered", "Unanswered questions", "unanswered"),
        ("Disliked answers", "Disliked answers", "disliked"),
        ("Knowledge base", "Knowledge base", "knowledge"),
        ("Audit log", "Audit log", "audit"),
    ]
    for link, heading, name in pages:
        await open_page(phone, link, heading)
        if name == "knowledge":
            await field(phone, "Question").fill("How do I descale a kettle?")
            await phone.get_by_role("button", name="Show the passages found").click()
            await expect(phone.locator("#try-results .passage").first).to_be_visible()
            # The form's fields take the screen's width, and focusing them does not zoom.
            topic = field(phone, "Topic")
            box = await topic.bounding_box()
            assert box is not None and box["width"] > 300, box
            font = await topic.evaluate("e => getComputedStyle(e).fontSize")
            assert float(font.removesuffix("px")) >= 16, font
        overflow = await phone.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"{name}: {overflow}px wider than the screen"
        await screenshot(phone, f"phone-{name}")
