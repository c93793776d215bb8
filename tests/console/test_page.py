"""GET /admin: one page for anyone, with no data in it, under the strictest policy we serve."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from server.static import NO_FRAMING
from tests.accounts import PASSWORD, unique_email
from tests.widget.test_static import csp


async def test_the_page_is_served_to_anyone_with_a_strict_policy(client: TestClient) -> None:
    resp = await client.get("/admin")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<script type="module" src="/static/admin/console.js">' in page
    policy = csp(resp)
    assert policy["default-src"] == "default-src 'none'"
    assert policy["style-src"] == "style-src 'self'"
    assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == f"frame-ancestors {NO_FRAMING}"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_its_files_are_never_framed_either(client: TestClient) -> None:
    resp = await client.get("/static/admin/index.html")
    assert resp.status == 200
    assert csp(resp)["frame-ancestors"] == f"frame-ancestors {NO_FRAMING}"
    widget = await client.get("/static/widget-frame.html")
    assert csp(widget)["frame-ancestors"] == "frame-ancestors 'self'"
    for name, kind in [("console.js", "javascript"), ("console.css", "css")]:
        resp = await client.get(f"/static/admin/{name}")
        assert resp.status == 200 and re.search(kind, resp.content_type), resp.content_type
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_page_holds_no_data(client: TestClient) -> None:
    """Whatever the database holds, the page is the same file: data comes only from the
    admin API, after a login."""
    first = await (await client.get("/admin")).text()
    email = unique_email("someone")
    resp = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert resp.status == 201
    assert await (await client.get("/admin")).text() == first
    assert email not in first
