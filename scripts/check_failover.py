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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import (
    ROOT,
    SECRET,
    ChatUser,
    say,
    signup,
    start_private_postgres,
    stored_client_ids,
    stored_reply_ids,
)

from server.db import scratch
from tests.processes import free_port, server_process, wait_ready

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MAIN_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/chat.conf;
}}
"""


def nginx_config(tmp: Path, port: int, upstreams: list[int]) -> Path:
    """deploy/nginx-chat.conf with this run's ports, inside a minimal main config."""
    site = (ROOT / "deploy" / "nginx-chat.conf").read_text()
    site = site.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    for default, actual in zip((8001, 8002), upstreams, strict=True):
        site, n = re.subn(rf"server 127\.0\.0\.1:{default} ", f"server 127.0.0.1:{actual} ", site)
        assert n == 1, "deploy/nginx-chat.conf no longer has the upstream lines this check edits"
    (tmp / "chat.conf").write_text(site)
    main = tmp / "nginx.conf"
    main.write_text(MAIN_CONF.format(tmp=tmp))
    return main


async def check(args: argparse.Namespace, tmp: Path) -> list[str]:
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url:
        dsn = await scratch.create_database(admin_url, "chat_check")
    else:
        dsn = await asyncio.to_thread(start_private_postgres, tmp / "pg")
    failures: list[str] = []
    env = {"LLM_TOKEN_DELAY_MS": "30", "CHAT_RATE_PER_MINUTE": "0", "TRUST_FORWARDED": "true"}
    try:
        async with (
            server_process(tmp, dsn, SECRET, **env) as a,
            server_process(tmp, dsn, SECRET, **env) as b,
        ):
            port = free_port()
            conf = nginx_config(tmp, port, [a.port, b.port])
            nginx = subprocess.Popen(  # noqa: ASYNC220 (it runs alongside, not awaited)
                [NGINX, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                stderr=subprocess.PIPE,
            )
            try:
                proxy = f"http://127.0.0.1:{port}"
                await wait_ready(proxy, timeout=20)
                say(f"nginx on {proxy} in front of :{a.port} and :{b.port}")
                failures += await chat_through_failover(args, proxy, a, dsn)
            finally:
                nginx.send_signal(signal.SIGQUIT)
                try:
                    nginx.wait(10)
                except subprocess.TimeoutExpired:
                    nginx.kill()
                errors = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
                if nginx.returncode not in (0, None):
                    failures.append(f"nginx exited with {nginx.returncode}: {errors[-500:]}")
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
