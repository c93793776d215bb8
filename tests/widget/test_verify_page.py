"""static/verify.html in Chromium: the mailbox's owner confirms and chooses the password."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.accounts import PASSWORD, mailed_link, signup


async def test_the_owner_confirms_and_chooses_the_password(client, page: Page, caplog):
    caplog.set_level("INFO", logger="server.mail")
    email, old_token, _ = await signup(client)
    link = await mailed_link(caplog, email)
    token = link.split("#token=")[1]
    violations: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))

    await page.goto(str(client.make_url(f"/static/verify.html#token={token}")))
    assert "token" not in page.url  # out of the address bar, history and bookmarks
    await page.get_by_label("Password").fill("é" * 37)  # 74 UTF-8 bytes: the server says no
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("status")).to_contain_text("72")  # its 422, shown
    await page.get_by_label("Password").fill("the owner's choice")
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("status")).to_contain_text("confirmed")
    assert violations == []

    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {old_token}"})
    assert me.status == 401
    for password, status in [(PASSWORD, 401), ("the owner's choice", 200)]:
        resp = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert resp.status == status


async def test_a_link_without_its_token_says_so(client, page: Page):
    await page.goto(str(client.make_url("/static/verify.html")))
    await expect(page.get_by_role("status")).to_contain_text("incomplete")
    await expect(page.get_by_role("button", name="Confirm")).to_be_hidden()
