"""`GET /admin`: the operator console, one static page served to anyone.

The page holds no data: it asks the admin API for everything with the token of the
admin who logs in on it (`static/admin/console.js`), so a visitor without an admin's
token sees a login form or a refusal, never data. It is served with the same strict
policy as the widget's pages (files from this server only, nothing inline), and it may
be framed by no site at all: an operator's clicks are not to be borrowed.
"""

from __future__ import annotations

from aiohttp import web

from server.static import NO_FRAMING, STATIC_DIR, html_headers

CONSOLE_PAGE = STATIC_DIR / "admin" / "index.html"


def setup_console(app: web.Application) -> None:
    page = CONSOLE_PAGE.read_text(encoding="utf-8")  # read once, at set-up

    async def console(request: web.Request) -> web.Response:
        return web.Response(
            text=page, content_type="text/html", headers=html_headers(request, NO_FRAMING)
        )

    app.router.add_get("/admin", console)
