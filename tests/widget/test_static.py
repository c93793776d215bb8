"""server/static.py: the widget's files, the demo page and the headers that isolate them."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.settings import Settings
from server.static import STATIC_DIR, frame_ancestors

LOADER_LIMIT = 10 * 1024


def csp(resp) -> dict[str, str]:
    policy = resp.headers["Content-Security-Policy"]
    return {d.split()[0]: d.strip() for d in policy.split(";") if d.strip()}


def test_loader_is_under_10_kb_gzipped() -> None:
    size = len(gzip.compress((STATIC_DIR / "widget.js").read_bytes(), compresslevel=9))
    assert size < LOADER_LIMIT, f"widget.js is {size} bytes gzipped"


@pytest.mark.parametrize(
    "page", sorted(str(p.relative_to(STATIC_DIR)) for p in STATIC_DIR.rglob("*.html"))
)
def test_pages_have_no_inline_script_or_style(page: str) -> None:
    """The pages' CSP allows no inline code, so none may be needed."""
    text = (STATIC_DIR / page).read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text, re.I)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=|javascript:", text, re.I)


def test_nothing_is_fetched_from_other_hosts() -> None:
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = re.sub(r"/\*.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.S)
            urls = re.findall(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//[^\s\"')]+", text)
            assert urls == [], (path.name, urls)


def test_frame_ancestors(make_settings: Callable[..., Settings]) -> None:
    assert frame_ancestors(make_settings()) == "'self'"
    two = make_settings(allowed_origins=("https://a.example", "http://b.example:8080"))
    assert frame_ancestors(two) == "'self' https://a.example http://b.example:8080"
    assert frame_ancestors(make_settings(allowed_origins=("*",))) == "*"


async def test_the_frame_page_policy(client: TestClient, settings: Settings) -> None:
    resp = await client.get("/static/widget-frame.html")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    policy = csp(resp)
    assert policy["frame-ancestors"] == "frame-ancestors 'self'"
    assert policy["default-src"] == "default-src 'none'"
    assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in resp.headers["Content-Security-Policy"]
    assert policy["style-src"] == "style-src 'self'"
    # 'self' covers ws: of the page's own origin (CSP 3); the configured one is named.
    own_ws = settings.own_origin.replace("http://", "ws://")
    assert policy["connect-src"] == f"connect-src 'self' {own_ws}"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("origins", "expected"),
    [
        (("https://shop.example",), "frame-ancestors 'self' https://shop.example"),
        (("*",), "frame-ancestors *"),
    ],
)
async def test_allowed_origins_may_frame_it(aiohttp_client, make_settings, origins, expected):
    client = await aiohttp_client(create_app(make_settings(allowed_origins=origins)))
    resp = await client.get("/static/widget-frame.html")
    assert csp(resp)["frame-ancestors"] == expected


async def test_scripts_and_styles_are_served(client: TestClient) -> None:
    for path, kind in [
        ("/static/widget.js", "javascript"),
        ("/static/frame/app.js", "javascript"),
        ("/static/widget.css", "text/css"),
    ]:
        resp = await client.get(path)
        assert resp.status == 200, path
        assert kind in resp.content_type
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in resp.headers
    assert (await client.get("/static/nope.js")).status == 404
    assert (await client.get("/static/../server/settings.py")).status in (403, 404)


async def test_demo_page_embeds_the_widget_with_the_one_tag(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(public_url="https://chat.example.com/")))
    resp = await client.get("/")
    assert resp.status == 200
    text = await resp.text()
    tag = (
        '<script src="https://chat.example.com/static/widget.js" '
        'data-server="https://chat.example.com"'
    )
    assert tag in text
    assert "{{server}}" not in text
    assert "https://chat.example.com" in csp(resp)["script-src"]
    assert csp(resp)["frame-ancestors"] == "frame-ancestors 'self'"


@pytest.mark.parametrize("host", ["x *", 'x"><b>', "chat.example.com@evil.example"])
@pytest.mark.parametrize("path", ["/", "/static/widget-frame.html", "/static/index.html"])
async def test_the_host_header_never_reaches_a_page_or_its_policy(
    client: TestClient, settings: Settings, host: str, path: str
) -> None:
    """Links and CSP sources come from settings: a client's Host header changes nothing."""
    plain = await client.get(path)
    forged = await client.get(path, headers={"Host": host})
    assert forged.status == plain.status == 200
    assert forged.headers["Content-Security-Policy"] == plain.headers["Content-Security-Policy"]
    assert await forged.text() == await plain.text()
    policy = forged.headers["Content-Security-Policy"]
    assert "evil" not in policy and " * " not in policy + " "
    assert csp(forged)["script-src"] == f"script-src 'self' {settings.own_origin}"
