"""Shared parts of the scripted checks (check_failover.py, check_db_outage.py,
check_redis_outage.py).

A private PostgreSQL (the embedded `pgserver` one, on a data directory of the
check's own, so stopping it disturbs nobody), chat clients that keep going
across reconnects, and the look-up of what was acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "check-secret-key-long-enough-for-hs256-0123456789abcdefghijklmn"
PASSWORD = "correct horse battery"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- a private PostgreSQL -------------------------------------------------------------------


def start_private_postgres(var_dir: Path) -> str:
    """Start (or start again) the embedded PostgreSQL under `var_dir`; its URI.

    Run in a child process: pgserver remembers servers per process and would not
    start one again after `stop_private_postgres`.
    """
    code = (
        "import sys; from pathlib import Path; from server.db.pool import start_embedded;"
        " print(start_embedded(Path(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(var_dir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def stop_private_postgres(var_dir: Path) -> None:
    """`pg_ctl stop -m fast` on it: every session is cut, as in a crash or restart."""
    from server.db.pool import stop_embedded  # after ROOT is on sys.path

    stop_embedded(var_dir)


# -- what a check saw ----------------------------------------------------------------------


class Failures(list[str]):
    def check(self, ok: bool, what: str) -> None:
        say(("ok   " if ok else "FAIL ") + what)
        if not ok:
            self.append(what)


async def frames_until(ws, kind: str, id: str | None, within_s: float = 15) -> list[dict]:
    frames = []
    deadline = time.monotonic() + within_s
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket closed: {msg.type.name} {msg.data}")
        frame = orjson.loads(msg.data)
        frames.append(frame)
        if frame["type"] == kind and frame.get("id") == id:
            return frames


async def send(ws, frame: dict) -> None:
    await ws.send_str(orjson.dumps(frame).decode())


def run_outage_check(
    name: str,
    prefix: str,
    check: Callable[[argparse.Namespace, Path], Awaitable[Failures]],
    args: argparse.Namespace,
) -> None:
    """Run `check` in a temporary folder; print the verdict and exit 1 on a failure."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        Path(tmp).chmod(0o755)  # the embedded PostgreSQL runs as its own user under root
        failures = asyncio.run(check(args, Path(tmp)))
    took = time.monotonic() - started
    if failures:
        print(f"{name} check FAILED in {took:.0f} s: " + "; ".join(failures))
        raise SystemExit(1)
    print(f"{name} check passed in {took:.0f} s")


# -- clients --------------------------------------------------------------------------------


async def signup(session: aiohttp.ClientSession, url: str) -> tuple[str, int]:
    email = f"check-{uuid.uuid4().hex[:10]}@example.com"
    async with session.post(
        url + "/api/v1/auth/signup", json={"email": email, "password": PASSWORD}
    ) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return body["access_token"], body["id"]


@dataclass
class ChatUser:
    """A client that chats one message at a time and survives its server's death.

    On a lost connection it reconnects (to whatever instance the proxy picks),
    resends a message not yet acknowledged (same id: stored once) and resumes
    the reply it was waiting for.
    """

    ws_url: str
    token: str
    user_id: int
    name: str
    acked: dict[str, int] = field(default_factory=dict)  # client id → message_id
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    done_after: list[float] = field(default_factory=list)  # when each reply ended
    trail: list[str] = field(default_factory=list)  # the last few events, for a summary

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        pending: str | None = None  # sent, its reply not ended yet
        text = ""
        seq = -1
        while not stop.is_set():
            try:
                ws = await session.ws_connect(
                    self.ws_url, headers={"Authorization": f"Bearer {self.token}"}, heartbeat=None
                )
            except (aiohttp.ClientError, OSError):
                self.reconnects += 1
                await asyncio.sleep(0.2)
                continue
            try:
                ready = orjson.loads((await ws.receive(timeout=10)).data)
                assert ready["type"] == "ready", ready
                if pending is not None:
                    if pending in self.acked:
                        frame = {"type": "resume", "id": pending, "after_seq": seq}
                    else:
                        frame = {"type": "message", "id": pending, "text": text}
                    await ws.send_str(orjson.dumps(frame).decode())
                while not stop.is_set():
                    if pending is None:
                        pending, text, seq = f"{self.name}-{uuid.uuid4().hex[:8]}", QUESTION, -1
                        await ws.send_str(
                            orjson.dumps({"type": "message", "id": pending, "text": text}).decode()
                        )
                    msg = await ws.receive(timeout=30)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"connection lost: {msg.type.name}")
                    frame = orjson.loads(msg.data)
                    kind, fid = frame["type"], frame.get("id")
                    self._note(f"{kind} {fid} {frame.get('seq', frame.get('code', ''))}")
                    if fid != pending:
                        continue
                    if kind == "ack":
                        self.acked[fid] = frame["message_id"]
                    elif kind == "token":
                        if frame["seq"] == seq + 1:
                            seq = frame["seq"]
                    elif kind == "error":
                        self.errors.append(frame)
                    elif kind == "end":
                        self.ended[fid] = frame
                        self.done_after.append(time.monotonic())
                        pending = None
            except (ConnectionError, TimeoutError, aiohttp.ClientError, OSError) as exc:
                self._note(f"lost: {exc!r} while waiting for {pending}")
                self.reconnects += 1
            finally:
                await ws.close()

    def _note(self, event: str) -> None:
        self.trail = [*self.trail[-7:], f"{time.strftime('%H:%M:%S')} {event}"]


QUESTION = "What settings are there for the purge schedule and retention?"


async def stored_client_ids(dsn: str, users: list[ChatUser]) -> set[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT user_id, client_id FROM chat_history"
            " WHERE user_id = ANY($1::bigint[]) AND client_id IS NOT NULL",
            [u.user_id for u in users],
        )
    finally:
        await conn.close()
    return {(r["user_id"], r["client_id"]) for r in rows}


async def stored_reply_ids(dsn: str, ids: list[int]) -> set[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id FROM chat_history WHERE id = ANY($1::bigint[])", ids)
    finally:
        await conn.close()
    return {r["id"] for r in rows}
