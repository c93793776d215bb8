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
CONSOLE_FILES = "/static/admin/"  # the operator console's files (server/console.py)
NO_FRAMING = "'none'"


def frame_ancestors(settings: Settings) -> str:
    """`'self'` plus the allow-list; `*` lets any site embed the widget."""
    if "*" in settings.allowed_origins:
        return "*"
    return " ".join(("'self'", *settings.allowed_origins))


def _ws_origin(origin: str) -> str:
    url = URL(origin)
    return str(url.with_scheme("wss" if url.scheme == "https" else "ws")).rstrip("/")


def page_csp(settings: Settings, ancestors: str | None = None) -> str:
    """A strict policy for our own pages: files from this server only, nothing inline.

    Every source comes from settings (`own_origin`), never from the request's Host
    header, which the client writes: `Host: x *` must not become `script-src … *`.
    `ancestors` replaces `frame-ancestors` (default: the widget's, `ALLOWED_ORIGINS`).
    """
    origin = settings.own_origin
    connect = f"'self' {_ws_origin(origin)}"
    return (
        "default-src 'none'; "
        f"script-src 'self' {origin}; "
        "style-src 'self'; "
        "img-src 'self' data:; "
        f"connect-src {connect}; "
        "frame-src 'self'; "
        "base-uri 'none'; "
        "form-action 'none'; "
        f"frame-ancestors {ancestors or frame_ancestors(settings)}"
    )


def html_headers(request: web.Request, ancestors: str | None = None) -> dict[str, str]:
    """The headers of every HTML page of ours (`page_csp`, no sniffing, revalidated)."""
    return {
        "Content-Security-Policy": page_csp(request.app[keys.SETTINGS], ancestors),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def demo_page(template: str):
    """`/`: a page embedding the widget with the one tag sites use (read once, at set-up)."""

    async def handler(request: web.Request) -> web.Response:
        server = request.app[keys.SETTINGS].own_origin
        text = template.replace(SERVER_PLACEHOLDER, html.escape(server, quote=True))
        return web.Response(text=text, content_type="text/html", headers=html_headers(request))

    return handler


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Files under /static: no sniffing, revalidated; HTML there gets the page policy."""
    if not request.path.startswith("/static/"):
        return
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-cache")
    if response.content_type == "text/html":
        # The console's files are never framed, whatever ALLOWED_ORIGINS lets embed the widget.
        console = request.path.startswith(CONSOLE_FILES)
        response.headers.update(html_headers(request, NO_FRAMING if console else None))


def setup_static(app: web.Application) -> None:
    app.router.add_get("/", demo_page((STATIC_DIR / DEMO_PAGE).read_text(encoding="utf-8")))
    app.router.add_static("/static", STATIC_DIR)
    app.on_response_prepare.append(_static_headers)
