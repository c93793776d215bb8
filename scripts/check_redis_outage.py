"""Redis away for a while under two instances (FANOUT_URL): each goes on alone, says so
in /readyz, and catches up when Redis is back.

    python scripts/check_redis_outage.py [--outage 10]

Runs a private PostgreSQL (the embedded one, on a temporary data directory)
and a private `redis-server` (a free port, nothing saved to disk: the machine's
Redis is never touched), and two server instances A and B sharing both. One
user has a tab on each. With a reply streaming on A and mirrored live on B,
Redis is stopped for `--outage` seconds. During the outage: `/readyz` answers
200 with `"fanout":"degraded"` on both, the reply on A ends normally on A, a
message sent on B is acked and answered on B, and both sockets stay open.
After Redis is started again (empty: a restart), with no server restart:
`/readyz` says `"fanout":"ok"` on both, B's tab gets the rest of A's reply and
its `end` exactly as A's tab got them, A's tab gets B's message and its reply,
a new message fans out live again, and every acked message and ended reply is
stored once. Exit status 0 when all of that holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
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

from tests.processes import PrivateRedis, server_process


async def fanout_state(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    """(/readyz status, its `fanout`)."""
    try:
        async with session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status, (await resp.json()).get("fanout")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, None


async def eventually_fanout(session, urls: list[str], want: str, within_s: float) -> float | None:
    """Seconds until every /readyz answered 200 with `fanout` `want`, or None."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        states = [await fanout_state(session, url) for url in urls]
        if all(state == (200, want) for state in states):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def fans_out(sender, viewer, id: str) -> bool:
    """A message sent on `sender`'s instance: `viewer`'s tab sees it and its reply live."""
    await send(sender, {"type": "message", "id": id, "text": "What is the purge?"})
    sent = await frames_until(sender, "end", id)
    seen = await frames_until(viewer, "end", id)
    return first_of(seen, id)["type"] == "message" and reply_of(seen, id) == reply_of(sent, id)


def first_of(frames: list[dict], id: str) -> dict:
    return next(f for f in frames if f.get("id") == id)


def reply_of(frames: list[dict], id: str) -> list[dict]:
    return [f for f in frames if f.get("id") == id and f["type"] in ("start", "token", "end")]


async def check(args: argparse.Namespace, tmp: Path) -> Failures:
    failures = Failures()
    pg = tmp / "pg"
    dsn = await asyncio.to_thread(start_private_postgres, pg)
    redis = PrivateRedis()
    redis.start()
    env = {"LLM_TOKEN_DELAY_MS": "40", "CHAT_RATE_PER_MINUTE": "0", "FANOUT_URL": redis.url}
    try:
        async with (
            server_process(tmp, dsn, SECRET, **env) as a,
            server_process(tmp, dsn, SECRET, **env) as b,
            aiohttp.ClientSession() as session,
        ):
            token, user_id = await signup(session, a.url)
            headers = {"Authorization": f"Bearer {token}"}
            tab_a = await session.ws_connect(a.ws_url, headers=headers, heartbeat=None)
            tab_b = await session.ws_connect(b.ws_url, headers=headers, heartbeat=None)
            for tab in (tab_a, tab_b):
                assert orjson.loads((await tab.receive()).data)["type"] == "ready"
            took = await eventually_fanout(session, [a.url, b.url], "ok", 10)
            failures.check(took is not None, "/readyz says fanout ok on both")
            await asyncio.sleep(1.5)  # each has seen the other

            failures.check(
                await fans_out(tab_a, tab_b, "before"),
                "before the outage, B's tab sees A's message and reply live",
            )

            await send(tab_a, {"type": "message", "id": "inflight", "text": QUESTION})
            seen_b = await frames_until(tab_b, "token", "inflight")
            redis.stop()
            stopped = time.monotonic()
            say(f"Redis stopped for {args.outage:.0f} s")

            took = await eventually_fanout(session, [a.url, b.url], "degraded", 5)
            failures.check(
                took is not None,
                f"/readyz 200 with fanout degraded on both (after {took or 0:.1f} s)",
            )
            inflight_a = await frames_until(tab_a, "end", "inflight", within_s=30)
            failures.check(
                inflight_a[-1]["finish_reason"] == "stop",
                "the reply in flight ends normally on A, its own instance",
            )
            await send(
                tab_b, {"type": "message", "id": "on-b", "text": "How do I embed the widget?"}
            )
            during_b = await frames_until(tab_b, "end", "on-b")
            failures.check(
                first_of(during_b, "on-b")["type"] == "ack"
                and during_b[-1]["finish_reason"] == "stop",
                "a message on B is acked and answered on B",
            )
            await asyncio.sleep(max(0.0, args.outage - (time.monotonic() - stopped)))
            pongs = {}
            for name, tab in (("A", tab_a), ("B", tab_b)):
                await send(tab, {"type": "ping"})
                pongs[name] = await frames_until(tab, "pong", None)
                failures.check(not tab.closed, f"{name}'s socket stays open (ping → pong)")
            states = [await fanout_state(session, u) for u in (a.url, b.url)]
            failures.check(
                states == [(200, "degraded")] * 2, f"/readyz still degraded at the end ({states})"
            )

            redis.start()
            say("Redis started again (empty)")
            took = await eventually_fanout(session, [a.url, b.url], "ok", 20)
            failures.check(
                took is not None, f"/readyz says fanout ok again (after {took or 0:.1f} s)"
            )
            rest_b = await frames_until(tab_b, "end", "inflight", within_s=20)
            # Every frame B's tab got since the reply began, whichever read took it.
            all_b = seen_b + during_b + pongs["B"] + rest_b
            got = [f for f in all_b if f.get("id") == "inflight" and f["type"] == "token"]
            sent = [f for f in inflight_a if f.get("id") == "inflight" and f["type"] == "token"]
            failures.check(
                got == sent and rest_b[-1] == inflight_a[-1],
                f"B's tab gets the rest of A's reply and its end ({len(got)}/{len(sent)} tokens)",
            )
            caught_up = await frames_until(tab_a, "end", "on-b", within_s=20)
            failures.check(
                first_of(caught_up, "on-b")["type"] == "message"
                and reply_of(caught_up, "on-b") == reply_of(during_b, "on-b"),
                "A's tab gets B's message and reply from the outage",
            )

            failures.check(
                await fans_out(tab_b, tab_a, "after"),
                "after the outage, a new message fans out live again",
            )

            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT m.client_id, count(r.id) AS replies FROM chat_history m"
                    " LEFT JOIN chat_history r ON r.reply_to = m.id"
                    " WHERE m.user_id = $1 AND m.is_user_message GROUP BY m.client_id",
                    user_id,
                )
            finally:
                await conn.close()
            stored = {r["client_id"]: r["replies"] for r in rows}
            want = {"before": 1, "inflight": 1, "on-b": 1, "after": 1}
            failures.check(stored == want, f"every message and reply stored once ({stored})")
            await tab_a.close()
            await tab_b.close()
            codes = (await a.stop(), await b.stop())
            failures.check(codes == (0, 0), f"both servers stop cleanly (exit {codes})")
    finally:
        redis.stop()
        await asyncio.to_thread(stop_private_postgres, pg)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=10.0, help="seconds without Redis")
    run_outage_check("redis outage", "redis-outage-", check, parser.parse_args())


if __name__ == "__main__":
    main()
