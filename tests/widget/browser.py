"""The widget's test rig: the chat server behind a relay, host sites, Chromium, and
the steps a visitor takes. Helpers, imported by tests; the fixtures are in conftest.py.

The chat server (the real app, real PostgreSQL) listens on an internal port behind a
small TCP relay on `http://localhost:PORT_B`, so a test can drop every connection
(`ChatServer.drop()`) without stopping the server, or restart the server itself
(`ChatServer.restart()`, same port, same database). Host pages are served from
`http://127.0.0.1:PORT_A`, the one origin on ALLOWED_ORIGINS, and from a third
origin that is not on it. Chromium is Debian's, driven by Playwright.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from playwright.async_api import Browser, Frame, Page, async_playwright, expect

from server.app import create_app
from server.settings import Settings
from tests.accounts import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


ARTIFACTS = ROOT / "test-artifacts"


CHROMIUM = "/usr/bin/chromium"


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


TOKEN_DELAY_MS = 25.0


TIMEOUT_MS = 15_000

# A phone's screen, for `new_page(browser, **PHONE)`.
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


LONG_QUESTION = "Tell me about lighthouse keepers"


MARKDOWN_QUESTION = "Show the formatting sample"


INJECTION_QUESTION = "zebra quokka injection"


PWN_SCRIPT = "<script>window.__pwned = 'script'</script>"


PWN_IMG = "<img src=x onerror=\"window.__pwned = 'img'\">"


EXTRA_KNOWLEDGE = [
    {
        "id": "lighthouses",
        "topic": "Lighthouse keepers",
        "content": " ".join(
            [
                # One long sentence: the mock answers with whole sentences, and these
                # tests need a long reply.
                "Lighthouse keepers tended the lamp through the night, trimming wicks and",
                "winding the clockwork that turned the lens; each lighthouse had its own",
                "character, flashing a pattern that sailors learned by heart; keepers kept",
                "a logbook of weather, passing ships and the oil burned every evening;",
            ]
            * 3
        ),
    },
    {
        "id": "formatting",
        "topic": "Formatting sample",
        # One sentence (no full stop before the end), so the mock's answer is all of it.
        "content": (
            "The formatting sample shows **bold words**, *slanted words* and `inline code`:\n"
            "- first point\n- second point\n"
            "read [the guide](https://example.com/guide) or [this](javascript:alert(1))."
        ),
    },
    {
        "id": "injection",
        "topic": "Zebra quokka injection",
        "content": f"Zebra quokka injection: {PWN_IMG} then {PWN_SCRIPT} and "
        '<a href="javascript:window.__pwned=1">link</a> plus [bad](javascript:window.__pwned=2).',
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """A TCP relay on `localhost:port` to the server; `drop()` cuts every connection."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        # While muted, what the server sends is lost on the way (frames, acks …).
        self.muted = False

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "localhost", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            self.writers.discard(writer)
            self.tasks.discard(task)
            return
        self.writers.add(up_writer)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer, downstream=True)
            )
        finally:
            for w in (writer, up_writer):
                w.close()
                self.writers.discard(w)
            self.tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream=False
    ) -> None:
        try:
            while data := await reader.read(65536):
                if downstream and self.muted:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def drop(self) -> None:
        """Cut every open connection abruptly, as a network failure would."""
        for writer in list(self.writers):
            transport = writer.transport
            transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.drop()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


class ChatServer:
    """The real app on 127.0.0.1:internal, reached through the relay at `self.origin`."""

    def __init__(self, settings: Settings, relay: Relay) -> None:
        self.settings = settings
        self.relay = relay
        self.origin = f"http://localhost:{relay.port}"
        self.direct = f"http://127.0.0.1:{settings.port}"  # not through the relay
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings), handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.settings.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart(self, down_for: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start()

    def drop(self) -> None:
        self.relay.drop()


class HostSite:
    """Pages of a site that embeds the widget, on an origin of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.pages: dict[str, str] = {}
        self.runner: web.AppRunner | None = None

    async def _page(self, request: web.Request) -> web.Response:
        body = self.pages.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(text=body, content_type="text/html")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._page)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def host_page(server: str, *, attrs: str = "", body: str = "") -> str:
    """A host page with the one tag, and a script of its own that tries to get the token."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Host site</title>
<style>
  /* Hostile styles: they must not reach the widget. */
  * {{ font-family: serif !important; }}
  iframe {{ border: 10px dotted red !important; width: 10px !important; }}
  button {{ background: lime !important; }}
</style>
</head><body>
<h1>Host site</h1>
<p>Some content of the host page.</p>
<button id="host-button">A host button</button>
{body}
<script>
  window.__seen = [];
  window.addEventListener("message", (e) => window.__seen.push(JSON.stringify(e.data)));
  window.__steal = () => {{
    const out = {{}};
    const host = document.querySelector("[data-chat-widget]");
    const frame = host && host.shadowRoot && host.shadowRoot.querySelector("iframe");
    for (const [name, f] of [
      ["storage", () => frame.contentWindow.localStorage.getItem("chat-widget:token")],
      ["document", () => frame.contentDocument.body.innerHTML],
      ["window", () => frame.contentWindow.document.cookie],
    ]) {{
      try {{ out[name] = String(f()); }} catch (e) {{ out[name] = "error: " + e.name; }}
    }}
    out.seen = window.__seen;
    out.page = document.documentElement.outerHTML;
    out.own = JSON.stringify(Object.assign({{}}, localStorage)) + document.cookie;
    return out;
  }};
</script>
<script src="{server}/static/widget.js" data-server="{server}" {attrs} defer></script>
</body></html>"""


@contextlib.asynccontextmanager
async def chromium(storage: str = "refused") -> AsyncIterator[Browser]:
    """Debian's Chromium. As it comes, it refuses storage to third-party frames (the
    widget's); `storage="partitioned"` lets them keep partitioned storage."""
    args = list(CHROMIUM_ARGS)
    if storage == "partitioned":
        args.append("--disable-features=TrackingProtection3pcd")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser, **options: Any) -> Page:
    options.setdefault("viewport", {"width": 1280, "height": 800})
    context = await browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    # Shown by pytest when a test fails: what the browser said.
    page.on("console", lambda m: print(f"console {m.type}: {m.text} ({m.location.get('url')})"))
    page.on("pageerror", lambda e: print(f"page error: {e}"))
    page.on("websocket", lambda ws: print(f"websocket {ws.url}"))
    return page


async def widget_frame(page: Page, server: ChatServer) -> Frame:
    """The widget's iframe, once its document has loaded."""
    for _ in range(200):
        for frame in page.frames:
            if frame.url.startswith(server.origin + "/static/widget-frame.html"):
                await frame.wait_for_load_state()
                return frame
        await asyncio.sleep(0.05)
    raise AssertionError(f"no widget frame among {[f.url for f in page.frames]}")


async def open_widget(page: Page, server: ChatServer) -> Frame:
    await page.locator("[data-chat-widget] button").click()
    frame = await widget_frame(page, server)
    await frame.locator("#auth:not([hidden]), #chat:not([hidden])").wait_for()
    return frame


async def sign_up(frame: Frame, email: str, password: str) -> None:
    await frame.get_by_role("button", name="Sign up").click()
    await expect(frame.locator("#auth-submit")).to_have_text("Sign up")
    await frame.get_by_label("Email").fill(email)
    await frame.get_by_label("Password").fill(password)
    await frame.locator("#auth-submit").click()
    await frame.locator("#chat").wait_for()


async def log_in(frame: Frame, email: str, password: str) -> None:
    await frame.get_by_role("button", name="Log in", exact=True).first.click()
    await expect(frame.locator("#auth-submit")).to_have_text("Log in")
    await frame.get_by_label("Email").fill(email)
    await frame.get_by_label("Password").fill(password)
    await frame.locator("#auth-submit").click()
    await frame.locator("#chat").wait_for()


async def ask(frame: Frame, text: str) -> int:
    """Type and send `text`; returns the index of its turn (question and reply) in the log."""
    index = await frame.locator(".turn").count()
    await frame.get_by_label("Your message").fill(text)
    await frame.get_by_label("Your message").press("Enter")
    return index


def reply_at(frame: Frame, index: int):
    return frame.locator(".turn").nth(index).locator(".msg.bot")


def last_reply(frame: Frame):
    return frame.locator(".msg.bot[data-reply-to]").last


async def wait_reply(frame: Frame, index: int, states: tuple[str, ...] = ("stop",)) -> str:
    """Wait until the reply of turn `index` is in one of `states`; returns its state."""
    turn = frame.locator(".turn").nth(index)
    selector = ", ".join(f'.msg.bot[data-state="{s}"]' for s in states)
    await turn.locator(selector).wait_for()
    return await turn.locator(".msg.bot").get_attribute("data-state") or ""


async def history(server: ChatServer, token: str) -> list[dict[str, Any]]:
    """The visitor's history over REST, as the contract defines it (past the relay)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{server.direct}/api/v1/chat/chat-history",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


# The lowest WCAG contrast ratio of any visible text in the document, and where it is.
LOWEST_CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  let worst = [99, ""];
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest(".sr-only")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || Number(style.opacity) < 0.1) continue;
    const a = lum(rgb(style.color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst[0]) worst = [ratio, el.className || el.tagName];
  }
  return worst;
}"""


async def rest_token(server: ChatServer, email: str, password: str = PASSWORD) -> str:
    """The visitor's own token, from a REST login, to check what the server stored."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.origin}/api/v1/auth/login", json={"email": email, "password": password}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return (await resp.json())["access_token"]
