"""The API docs pages in a real browser: they render, and nothing leaves the server's origin.

The contract serves `/docs` (Swagger UI) and `/redoc` (ReDoc) "without any outside
network". Debian's Chromium loads each page from the real app on a real socket; every
request the page makes is recorded, and so is every Content-Security-Policy violation
(a fetch the page's policy had to stop is one the page tried to make).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Page, expect
from yarl import URL

from tests.widget.browser import chromium, new_page

# What each page must show once rendered: operation summaries from the OpenAPI document.
RENDERED = [
    "Ask a question; both messages are stored",
    "The caller's newest messages, oldest first",
]

# Collects CSP violations in the page itself (init scripts are not subject to the policy).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.effectiveDirective} ${e.blockedURI}`);
});
"""


def origin(url: str) -> str:
    return str(URL(url).origin())


async def browse(page: Page, url: str) -> dict[str, list[Any]]:
    """Open `url`, recording outside requests, failed own requests and console errors."""
    own = origin(url)
    seen: dict[str, list[Any]] = {"outside": [], "failed": [], "errors": []}

    def on_request(request) -> None:
        if URL(request.url).scheme in ("data", "blob"):
            return  # never leaves the browser
        if origin(request.url) != own:
            seen["outside"].append(request.url)

    def on_response(response) -> None:
        if response.status >= 400:
            seen["failed"].append(f"{response.status} {response.url}")

    page.on("request", on_request)
    page.on("requestfailed", lambda r: seen["failed"].append(f"{r.failure} {r.url}"))
    page.on("response", on_response)
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    await page.add_init_script(RECORD_VIOLATIONS)
    await page.goto(url)
    return seen


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_render_with_no_outside_request(client: TestClient, path: str):
    url = str(client.make_url(path))
    async with chromium() as browser:
        page = await new_page(browser)
        seen = await browse(page, url)
        for text in RENDERED:
            if path == "/docs":  # an operation's summary line
                await expect(page.locator(".opblock-summary", has_text=text)).to_be_visible()
            else:  # an operation's heading in the middle panel
                await expect(page.get_by_role("heading", name=text)).to_be_visible()
        if path == "/redoc":
            await expect(page.locator("h1")).to_contain_text("Chat Server")
            # The search index runs in a worker (made from a blob: URL).
            found = page.get_by_role("menuitem", name="Run the purge now")
            await expect(found).to_be_hidden()  # in the collapsed "admin" group
            await page.get_by_placeholder("Search...").fill("purge")
            await expect(found).to_be_visible()
        await page.wait_for_load_state("networkidle")
        await page.wait_for_timeout(300)
        violations = await page.evaluate("window.__violations")
        # ReDoc's badge (in the side menu's footer): its logo, as loaded.
        logos = await page.get_by_role("link", name="API docs by Redocly").evaluate_all(
            "links => links.map((a) => a.querySelector('img')?.naturalWidth ?? 0)"
        )
        await page.context.close()
    assert seen["outside"] == [], f"{path} reached outside its origin"
    assert violations == [], f"{path} broke its Content-Security-Policy"
    assert seen["failed"] == [] and seen["errors"] == []
    if path == "/redoc":
        assert len(logos) == 1 and logos[0] > 0, "the badge's logo, from this server, shows"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_allow_only_their_own_origin(client: TestClient, path: str):
    resp = await client.get(path)
    assert resp.status == 200
    policy = resp.headers["Content-Security-Policy"]
    directives = dict((d.split()[0], d.split()[1:]) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == ["'none'"]
    for sources in directives.values():
        for source in sources:
            # 'self', keywords, hashes and local schemes only: no host, no http(s)/ws(s).
            assert source.startswith("'") or source in ("data:", "blob:"), policy
    assert "'unsafe-eval'" not in policy
    assert not any("'unsafe-inline'" in s for s in directives["script-src"])
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
