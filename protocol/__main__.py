"""
A terminal chat: ``python -m protocol --server http://127.0.0.1:8000 --email a@b.c``.

Logs in over REST (optionally signing up first), opens the WebSocket and
streams replies as they come. Ctrl-C during a reply cancels it; Ctrl-C or
Ctrl-D at the prompt quits. Lines starting with ``/``: ``/ping``, ``/quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from websockets.exceptions import WebSocketException

from .client import ChatClient
from .errors import ErrorCode, ServerError
from .frames import Echo, End, Error, FinishReason, ServerFrame, Start, Token

WS_PATH = "/api/v1/chat/ws"


class LoginError(Exception):
    """Signup or login failed; the message is the server's ``detail``."""


def ws_url(server: str) -> str:
    """``http(s)://host[:port][/prefix]`` → ``ws(s)://host[:port][/prefix]/api/v1/chat/ws``."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {server!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS_PATH, "", ""))


async def _detail(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except (ValueError, aiohttp.ContentTypeError):
        return (await response.text())[:200] or response.reason or str(response.status)


async def login(
    session: aiohttp.ClientSession, server: str, email: str, password: str, *, signup: bool
) -> str:
    """Sign up (if asked; an existing account is fine) and log in; return the token."""
    base = server.rstrip("/")
    credentials = {"email": email, "password": password}
    if signup:
        async with session.post(f"{base}/api/v1/auth/signup", json=credentials) as response:
            if response.status not in (201, 409):
                raise LoginError(f"signup failed ({response.status}): {await _detail(response)}")
    async with session.post(f"{base}/api/v1/auth/login", json=credentials) as response:
        if response.status != 200:
            raise LoginError(f"login failed ({response.status}): {await _detail(response)}")
        return (await response.json())["access_token"]


async def refresh(session: aiohttp.ClientSession, server: str, token: str) -> str:
    """A fresh token for a still valid one."""
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{server.rstrip('/')}/api/v1/auth/refresh"
    async with session.post(url, headers=headers) as response:
        if response.status != 200:
            raise LoginError(f"refresh failed ({response.status}): {await _detail(response)}")
        return (await response.json())["access_token"]


def _start_stdin_reader(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Read stdin lines in a daemon thread (so a blocked read never holds up exit)."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        while True:
            line = sys.stdin.readline()
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n") if line else None)
            if not line:
                return

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return lines


def _print(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


class Terminal:
    """The chat loop: one prompt, one reply at a time."""

    def __init__(self, client: ChatClient, session: aiohttp.ClientSession, server: str) -> None:
        self.client = client
        self.session = session
        self.server = server
        self.token = ""
        self.replying: str | None = None  # id of the reply being streamed
        self.quit = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_interrupt(self) -> None:
        if self.replying is not None:
            self._spawn(self.client.cancel(self.replying))
        else:
            self.quit.set()

    def on_frame(self, frame: ServerFrame) -> None:
        """Frames that are not the current reply: other tabs, warnings."""
        match frame:
            case Echo(text=text):
                _print(f"\n[another tab] you: {text}")
            case End(text=text, finish_reason=reason):
                suffix = "" if reason == FinishReason.STOP else f" [{reason}]"
                _print(f"[another tab] assistant: {text}{suffix}")
            case Error(code=ErrorCode.TOKEN_EXPIRED, id=None):
                self._spawn(self.renew())
            case Error(code=code, message=message):
                _print(f"\n[error {code}] {message}")

    async def renew(self) -> None:
        try:
            self.token = await refresh(self.session, self.server, self.token)
            await self.client.reauth(self.token)
        except (LoginError, aiohttp.ClientError, OSError) as exc:
            _print(f"\n[could not renew the token: {exc}]")

    async def send(self, text: str) -> None:
        try:
            ack = await self.client.send_message(text)
        except ServerError as exc:
            wait = f" (retry in {exc.retry_after:g} s)" if exc.retry_after else ""
            _print(f"[refused: {exc.message}{wait}]")
            return
        self.replying = ack.id
        try:
            async for frame in self.client.reply(ack.id):
                if isinstance(frame, Start):
                    if frame.sources:
                        topics = ", ".join(source.topic for source in frame.sources)
                        _print(f"[sources: {topics}]")
                    _print("assistant: ", end="")
                elif isinstance(frame, Token):
                    _print(frame.text, end="")
                elif isinstance(frame, End):
                    if frame.finish_reason == FinishReason.CANCELLED:
                        _print(" [cancelled]", end="")
                    _print()
        except ServerError as exc:
            _print(f"[error: {exc.message}]")
        finally:
            self.replying = None

    async def run(self) -> None:
        ready = self.client.ready
        _print(f"Connected as {ready.email}. Ctrl-D quits, Ctrl-C stops a reply.")
        for pending in ready.pending:
            _print(f"[a reply is still being generated for message {pending.id}]")
        lines = _start_stdin_reader(asyncio.get_running_loop())
        closed = asyncio.ensure_future(self.client.wait_closed())
        quit = asyncio.ensure_future(self.quit.wait())
        try:
            while True:
                _print("you: ", end="")
                line_task = asyncio.ensure_future(lines.get())
                await asyncio.wait({line_task, closed, quit}, return_when=asyncio.FIRST_COMPLETED)
                if not line_task.done():
                    line_task.cancel()
                    break
                line = line_task.result()
                if line is None or line.strip() == "/quit":
                    break
                if line.strip() == "/ping":
                    _print(f"pong in {await self.client.ping() * 1000:.1f} ms")
                elif line.strip():
                    await self.send(line)
        finally:
            closed.cancel()
            quit.cancel()
            _print()
        if self.client.closed:
            _print(f"[connection closed: {self.client.close_code} {self.client.close_reason}]")


async def run(args: argparse.Namespace, password: str) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            token = await login(session, args.server, args.email, password, signup=args.signup)
        except LoginError as exc:
            print(exc, file=sys.stderr)
            return 1
        terminal: Terminal | None = None

        def on_frame(frame: ServerFrame) -> None:
            if terminal is not None:
                terminal.on_frame(frame)

        async with ChatClient.connect(
            ws_url(args.server), token, header_auth=not args.auth_frame, on_frame=on_frame
        ) as client:
            terminal = Terminal(client, session, args.server)
            terminal.token = token
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):  # Windows
                loop.add_signal_handler(signal.SIGINT, terminal.on_interrupt)
            try:
                await terminal.run()
            finally:
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(signal.SIGINT)
            return 0 if client.close_code in (None, 1000) else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chat-client", description="Chat from the terminal.")
    parser.add_argument("--server", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--email", required=True)
    parser.add_argument("--password", help="default: $CHAT_PASSWORD, else asked")
    parser.add_argument("--signup", action="store_true", help="create the account first")
    parser.add_argument(
        "--auth-frame", action="store_true", help="authenticate with a first frame, not a header"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m protocol`` and the ``chat-client`` command."""
    args = parse_args(argv)
    try:
        ws_url(args.server)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    password = args.password or os.environ.get("CHAT_PASSWORD") or getpass.getpass("Password: ")
    try:
        return asyncio.run(run(args, password))
    except KeyboardInterrupt:
        return 130
    except (OSError, aiohttp.ClientError, WebSocketException, ServerError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
