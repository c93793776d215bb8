"""The widget's files, its iframe page and the demo page, with the headers that isolate them.

The chat panel runs in an iframe served from here, so the visitor's token lives in
this origin's storage, out of reach of the host page's scripts. Which sites may
frame it is `ALLOWED_ORIGINS`, sent as CSP `frame-ancestors` on every HTML page
(the browser refuses the frame anywhere else). The pages allow no inline script or
style at all, so text from the LLM or another user can never run as code here.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web
from yarl import URL

from server import keys
from server.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DEMO_PAGE = "index.html"
SERVER_PLACEHOLDER = "{{server}}"


def frame_ancestors(settings: Settings) -> str:
    """`'self'` plus the allow-list; `*` lets any site embed the widget."""
    if "*" in settings.allowed_origins:
        return "*"
    return " ".join(("'self'", *settings.allowed_origins))


def _ws_origins(origins: list[str]) -> list[str]:
    out = []
    for origin in origins:
        url = URL(origin)
        scheme = "wss" if url.scheme == "https" else "ws"
        out.append(str(url.with_scheme(scheme)).rstrip("/"))
    return out


def page_csp(request: web.Request) -> str:
    """A strict policy for our own pages: files from this server only, nothing inline."""
    settings = request.app[keys.SETTINGS]
    origins = sorted({request_origin(request), settings.own_origin})
    connect = " ".join(["'self'", *_ws_origins(origins)])
    scripts = " ".join(["'self'", *origins])
    return (
        "default-src 'none'; "
        f"script-src {scripts}; "
        "style-src 'self'; "
        "img-src 'self' data:; "
        f"connect-src {connect}; "
        "frame-src 'self'; "
        "base-uri 'none'; "
        "form-action 'none'; "
        f"frame-ancestors {frame_ancestors(settings)}"
    )


def request_origin(request: web.Request) -> str:
    return str(URL.build(scheme=request.scheme, authority=request.host)).rstrip("/")


def _html_headers(request: web.Request) -> dict[str, str]:
    return {
        "Content-Security-Policy": page_csp(request),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def demo_page(template: str):
    """`/`: a page embedding the widget with the one tag sites use (read once, at set-up)."""

    async def handler(request: web.Request) -> web.Response:
        settings = request.app[keys.SETTINGS]
        server = settings.public_url.rstrip("/") if settings.public_url else request_origin(request)
        text = template.replace(SERVER_PLACEHOLDER, html.escape(server, quote=True))
        return web.Response(text=text, content_type="text/html", headers=_html_headers(request))

    return handler


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Files under /static: no sniffing, revalidated; HTML there gets the page policy."""
    if not request.path.startswith("/static/"):
        return
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-cache")
    if response.content_type == "text/html":
        response.headers.update(_html_headers(request))


def setup_static(app: web.Application) -> None:
    app.router.add_get("/", demo_page((STATIC_DIR / DEMO_PAGE).read_text(encoding="utf-8")))
    app.router.add_static("/static", STATIC_DIR)
    app.on_response_prepare.append(_static_headers)
