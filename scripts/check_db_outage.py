"""PostgreSQL away for a while: the server says so, keeps its sockets, and recovers alone.

    python scripts/check_db_outage.py [--outage 10]

Runs a private PostgreSQL (the embedded one, on a temporary data directory:
the machine's shared cluster is never touched) and one server instance on it.
With a client connected and a reply streaming, PostgreSQL is stopped
(`pg_ctl stop -m fast`) for `--outage` seconds. During the outage: `/readyz`
answers 503, a new message gets `error` `unavailable`, the reply in flight
ends with `error` then `end`, and the WebSocket stays open (ping → pong).
After PostgreSQL is back, with no server restart: `/readyz` 200, a message on
the same socket gets `ack` and a reply, the fan-out listens again, and the
reply that ended in the outage is stored as its `end` said. Exit
status 0 when all of that holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import (
    QUESTION,
    SECRET,
    Failures,
    frames_until,
    run_outage_check,
    say,
    send,
    signup,
    start_private_postgres,
    stop_private_postgres,
)

from server.fanout.postgres import LISTENER_PREFIX
from tests.processes import server_process


async def readyz(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def eventually_status(session, url: str, status: int, within_s: float) -> float | None:
    """Seconds until /readyz answered `status`, or None."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await readyz(session, url) == status:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def check(args: argparse.Namespace, tmp: Path) -> Failures:
    failures = Failures()
    pg = tmp / "pg"
    dsn = await asyncio.to_thread(start_private_postgres, pg)
    env = {"LLM_TOKEN_DELAY_MS": "40", "CHAT_RATE_PER_MINUTE": "0"}
    try:
        async with (
            server_process(tmp, dsn, SECRET, **env) as server,
            aiohttp.ClientSession() as session,
        ):
            token, _ = await signup(session, server.url)
            ws = await session.ws_connect(
                server.ws_url, headers={"Authorization": f"Bearer {token}"}, heartbeat=None
            )
            assert orjson.loads((await ws.receive()).data)["type"] == "ready"
            await send(ws, {"type": "message", "id": "before", "text": "What is the purge?"})
            frames = await frames_until(ws, "end", "before")
            failures.check(frames[-1]["finish_reason"] == "stop", "a reply before the outage")

            await send(ws, {"type": "message", "id": "inflight", "text": QUESTION})
            await frames_until(ws, "token", "inflight")
            await asyncio.to_thread(stop_private_postgres, pg)
            stopped = time.monotonic()
            say(f"PostgreSQL stopped for {args.outage:.0f} s")

            took = await eventually_status(session, server.url, 503, 5)
            failures.check(took is not None, f"/readyz answers 503 (after {took or 0:.1f} s)")
            inflight = await frames_until(ws, "end", "inflight")
            kinds = [f["type"] for f in inflight if f["type"] in ("error", "end")]
            codes = [f.get("code") for f in inflight if f["type"] == "error"]
            failures.check(
                kinds == ["error", "end"]
                and codes == ["unavailable"]
                and inflight[-1]["finish_reason"] == "error",
                "the reply in flight ends with error unavailable, then end (error)",
            )
            new_id = f"during-{uuid.uuid4().hex[:6]}"
            await send(ws, {"type": "message", "id": new_id, "text": "Hello?"})
            refused = await frames_until(ws, "error", new_id)
            failures.check(
                refused[-1]["code"] == "unavailable", "a new message gets error unavailable"
            )
            async with session.post(
                server.url + "/api/v1/chat/chat",
                json={"message": "Hello over REST?"},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                body = await resp.json()
                failures.check(
                    resp.status == 503 and "Retry-After" in resp.headers and "detail" in body,
                    f"REST chat answers 503 with Retry-After ({resp.status}: {body})",
                )
            await asyncio.sleep(max(0.0, args.outage - (time.monotonic() - stopped)))
            await send(ws, {"type": "ping"})
            pong = await frames_until(ws, "pong", None)
            failures.check(
                pong[-1]["type"] == "pong" and not ws.closed, "the socket stays open (ping → pong)"
            )
            failures.check(
                await readyz(session, server.url) == 503, "/readyz still 503 at the outage's end"
            )

            await asyncio.to_thread(start_private_postgres, pg)
            say("PostgreSQL started again")
            took = await eventually_status(session, server.url, 200, 20)
            failures.check(took is not None, f"/readyz answers 200 again (after {took or 0:.1f} s)")
            after = f"after-{uuid.uuid4().hex[:6]}"
            await send(ws, {"type": "message", "id": after, "text": "What is the purge?"})
            frames = await frames_until(ws, "end", after)
            failures.check(
                frames[0]["type"] == "ack" and frames[-1]["finish_reason"] == "stop",
                "a message on the same socket gets ack and a whole reply",
            )
            again = await session.ws_connect(
                server.ws_url, headers={"Authorization": f"Bearer {token}"}
            )
            ready = orjson.loads((await again.receive()).data)
            failures.check(ready["type"] == "ready", "a new connection is accepted")
            conn = await asyncpg.connect(dsn)
            try:
                listening = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                    LISTENER_PREFIX + "%",
                )
                for _ in range(50):  # stored by a retry within a few seconds
                    stored = await conn.fetchrow(
                        "SELECT r.message, r.finish_reason FROM chat_history m"
                        " JOIN chat_history r ON r.reply_to = m.id WHERE m.client_id = 'inflight'"
                    )
                    if stored is not None:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await conn.close()
            failures.check(listening == 1, "the fan-out listens again")
            failures.check(
                stored is not None
                and (stored["message"], stored["finish_reason"]) == (inflight[-1]["text"], "error"),
                "the reply ended in the outage is in the history, as its end said",
            )
            await again.close()
            await ws.close()
            code = await server.stop()
            failures.check(code == 0, f"the server stops cleanly (exit {code})")
    finally:
        await asyncio.to_thread(stop_private_postgres, pg)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=10.0, help="seconds without PostgreSQL")
    run_outage_check("database outage", "outage-", check, parser.parse_args())


if __name__ == "__main__":
    main()
