"""Failover through nginx: one of two instances is killed with SIGKILL mid-chat.

    python scripts/check_failover.py [--clients 8] [--before 4] [--after 10]

Starts two server instances on one fresh database (on DATABASE_URL's server, or
a private embedded PostgreSQL without it), Debian's nginx in front of them with
deploy/nginx-chat.conf (its own prefix, pid file and logs in a temporary
directory), and chat clients that talk through nginx only. After `--before`
seconds one instance gets SIGKILL; the clients must reconnect through nginx to
the other, resume, and go on chatting. Then, in PostgreSQL: every message that
got an `ack` is stored, and every `end` names a stored reply. Exit status 0
when all of that holds, 1 otherwise, with a summary either way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import (
    SECRET,
    ChatUser,
    say,
    signup,
    start_private_postgres,
    stored_client_ids,
    stored_reply_ids,
)

from server.db import scratch
from tests.processes import NGINX, nginx_in_front, server_process


async def check(args: argparse.Namespace, tmp: Path) -> list[str]:
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url:
        dsn = await scratch.create_database(admin_url, "chat_check")
    else:
        dsn = await asyncio.to_thread(start_private_postgres, tmp / "pg")
    failures: list[str] = []
    env = {"LLM_TOKEN_DELAY_MS": "30", "CHAT_RATE_PER_MINUTE": "0", "TRUSTED_PROXIES": "1"}
    try:
        async with (
            server_process(tmp, dsn, SECRET, **env) as a,
            server_process(tmp, dsn, SECRET, **env) as b,
            nginx_in_front(tmp, [a.port, b.port]) as proxy,
        ):
            say(f"nginx on {proxy} in front of :{a.port} and :{b.port}")
            failures += await chat_through_failover(args, proxy, a, dsn)
    finally:
        if admin_url:
            await scratch.drop_database(admin_url, dsn)
    return failures


async def chat_through_failover(args, proxy: str, victim, dsn: str) -> list[str]:
    ws_url = proxy.replace("http", "ws", 1) + "/api/v1/chat/ws"
    async with aiohttp.ClientSession() as session:
        users = []
        for n in range(args.clients):
            token, user_id = await signup(session, proxy)
            users.append(ChatUser(ws_url, token, user_id, f"c{n}"))
        stop = asyncio.Event()
        tasks = [asyncio.create_task(u.run(session, stop)) for u in users]
        await asyncio.sleep(args.before)
        before = sum(len(u.ended) for u in users)
        say(f"{before} replies so far; SIGKILL to the instance on :{victim.port}")
        killed_at = time.monotonic()
        await victim.stop(signal.SIGKILL)
        await asyncio.sleep(args.after)
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=35)
        for task in late:
            task.cancel()

    failures = []
    acked = {(u.user_id, cid) for u in users for cid in u.acked}
    stored = await stored_client_ids(dsn, users)
    lost = acked - stored
    ends = [e for u in users for e in u.ended.values()]
    reply_ids = [e["message_id"] for e in ends if e["message_id"] is not None]
    missing = set(reply_ids) - await stored_reply_ids(dsn, reply_ids)
    moved = [u for u in users if u.reconnects]
    after = [u for u in users if any(t > killed_at for t in u.done_after)]
    say(
        f"{len(acked)} messages acked, {len(stored & acked)} of them stored;"
        f" {len(ends)} replies ended ({sum(e['finish_reason'] == 'error' for e in ends)}"
        f" with error), {len(set(reply_ids) - missing)} of {len(reply_ids)} stored;"
        f" {len(moved)} of {len(users)} clients reconnected"
        f" ({sum(u.reconnects for u in users)} reconnects); {len(after)} clients got a reply"
        " after the kill"
    )
    if lost:
        failures.append(f"acked but not stored: {sorted(lost)[:5]}")
    if missing:
        failures.append(f"ended but not stored: {sorted(missing)[:5]}")
    if not moved:
        failures.append("no client was on the killed instance (nothing was tested)")
    if len(after) != len(users):
        stuck = [u.name for u in users if u not in after]
        failures.append(f"clients without a reply after the kill: {stuck}")
    if late:
        failures.append(f"{len(late)} clients still waiting 35 s after the end")
    for u in users:
        if late or failures:
            say(f"{u.name}: " + " | ".join(u.trail))
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--before", type=float, default=4.0, help="seconds of chat before")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of chat after")
    args = parser.parse_args()
    if not os.path.exists(NGINX):
        print("FAIL: nginx is not installed (apt-get install nginx)")
        raise SystemExit(1)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp:
        os.chmod(tmp, 0o755)  # nginx workers (www-data) read nothing here, but be plain
        failures = asyncio.run(check(args, Path(tmp)))
    took = time.monotonic() - started
    if failures:
        for failure in failures:
            print(f"FAIL: {failure}")
        print(f"failover check FAILED in {took:.0f} s")
        raise SystemExit(1)
    print(f"failover check passed in {took:.0f} s: nothing acked was lost")


if __name__ == "__main__":
    main()
