"""WebSocket chat under load, as a fraction of a bare aiohttp server measured in the same run.

    python bench/ws_chat.py [--idle 1000] [--active 100] [--duration 10] [--processes 1]

DATABASE_URL names the PostgreSQL server (default postgresql://root@127.0.0.1:5432/postgres);
a throwaway database is created on it and dropped at the end. The run:

1. the ceiling (bench/ceiling.py: same frames, no auth, no database) gets the same
   connections and the same chat workload;
2. our server (`python run_server.py`, uvloop, LLM_TOKEN_DELAY_MS=0, a 20-token answer)
   gets `--idle` + `--active` authenticated connections opened at `--ramp` per second,
   held, and the active ones chat (send, wait for `end`, repeat) for `--duration` s
   after `--warmup` s;
3. every acked message and ended reply is checked in PostgreSQL: stored exactly once.

Prints messages/s, latency to `ack`, first `token` and `end` (p50/p95/p99), errors, server
memory per connection, server and client CPU per message, and ours/ceiling ratios.
PostgreSQL CPU per message counts only the backends serving the run's database (the
machine's PostgreSQL is shared); Redis CPU per message, the redis-server that FANOUT_URL
names (found by its port). WORKERS and FANOUT_URL in the environment reach the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    PASSWORD,
    QUESTION,
    ROOT,
    Process,
    bench_database,
    ceiling_server,
    chat_server,
    cpu_seconds_of,
    insert_users,
    load,
    machine,
    mint_tokens,
    password_hash,
    percentile,
    postgres_cpu_seconds,
    profile,
    raise_nofile,
    reply_tokens,
    sleep_until,
    verify_stored,
)
from bench.loadgen import LoadGen, PhaseResult


@dataclass
class Run:
    """One target's figures."""

    name: str
    held: int
    open_failed: int
    mem_per_conn: float  # bytes
    phase: PhaseResult
    server_cpu_s: float
    hold_errors: dict[str, int]
    db_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    commits: int = 0  # transactions committed in the run's database (see `commits`)
    stored: dict[str, int] | None = None
    storm: PhaseResult | None = None  # the same chat during a login storm
    logins: list[float] | None = None  # login latencies in the storm, seconds
    target: str = ""  # ours, baseline, ceiling, ceiling-frames
    round: int = 0

    @property
    def cpu_per_msg_us(self) -> float:
        return self.server_cpu_s / max(1, self.phase.completed) * 1e6

    @property
    def db_cpu_per_msg_us(self) -> float:
        return self.db_cpu_s / max(1, self.phase.completed) * 1e6

    @property
    def redis_cpu_per_msg_us(self) -> float:
        return self.redis_cpu_s / max(1, self.phase.completed) * 1e6

    @property
    def client_cpu_per_msg_us(self) -> float:
        return self.phase.client_cpu_s / max(1, self.phase.completed) * 1e6

    @property
    def errors(self) -> int:
        return sum(self.phase.errors.values()) + sum(self.hold_errors.values()) + self.open_failed

    def summary(self) -> dict[str, Any]:
        p = self.phase
        return {
            "name": self.name,
            "held": self.held,
            "msgs_per_s": round(p.rate, 1),
            "ack_ms": [round(p.ms("ack", q), 2) for q in (0.5, 0.95, 0.99)],
            "first_token_ms": [round(p.ms("first", q), 2) for q in (0.5, 0.95, 0.99)],
            "end_ms": [round(p.ms("end", q), 2) for q in (0.5, 0.95, 0.99)],
            "server_cpu_us_per_msg": round(self.cpu_per_msg_us, 1),
            "client_cpu_us_per_msg": round(self.client_cpu_per_msg_us, 1),
            "postgres_cpu_us_per_msg": round(self.db_cpu_per_msg_us, 1),
            "redis_cpu_us_per_msg": round(self.redis_cpu_per_msg_us, 1),
            "commits_per_msg": round(self.commits / max(1, self.phase.completed), 3),
            "mem_kb_per_conn": round(self.mem_per_conn / 1024, 1),
            "errors": {**p.errors, **self.hold_errors, "open failed": self.open_failed},
            "stored": self.stored,
        }


async def measure(
    name: str,
    server: Process,
    ws_url: str,
    users: list[tuple[int, str]],
    args: argparse.Namespace,
    emails: list[str] | None = None,
    db_url: str | None = None,
) -> Run:
    """Open, hold, chat for one window; with `--login-storm`, a second window with logins."""
    async with LoadGen(ws_url, users, args.active, args.processes, QUESTION) as gen:
        await asyncio.sleep(0.5)
        rss0 = server.rss()
        opened = await gen.open(args.ramp)
        await asyncio.sleep(1.0)
        rss1 = server.rss()
        start, window = gen.window(args.warmup, args.duration)
        chat = asyncio.create_task(gen.chat(start, window, args.think_ms / 1000))
        await sleep_until(window[0])
        database = URL(db_url).path.lstrip("/") if db_url else None
        # No database (a ceiling): no PostgreSQL CPU (others' backends would count).
        pg_cpu = postgres_cpu_seconds if database else lambda _: 0.0
        cpu0, db0 = server.cpu(), await asyncio.to_thread(pg_cpu, database)
        redis0 = await asyncio.to_thread(redis_cpu_seconds)
        commits0 = await commits(db_url)
        profiler = None
        if args.profile and name == "ours":
            profiler = profile(server, args.profile, args.duration)
        await sleep_until(window[1])
        cpu1, db1 = server.cpu(), await asyncio.to_thread(pg_cpu, database)
        redis1 = await asyncio.to_thread(redis_cpu_seconds)
        phase = await chat
        await asyncio.sleep(1.1)  # the backends' last counts reach pg_stat_database
        commits1 = await commits(db_url)
        if profiler is not None:
            await asyncio.to_thread(profiler.wait)
        storm = logins = None
        if args.login_storm and emails:
            start, window = gen.window(args.warmup, args.duration)
            chat = asyncio.create_task(gen.chat(start, window, args.think_ms / 1000))
            logins = await login_storm(server.url, emails, args.login_storm, start, window)
            storm = await chat
        hold_errors = dict(await gen.close())
    run = Run(
        name,
        opened.held,
        opened.failed,
        (rss1 - rss0) / max(1, opened.held),
        phase,
        cpu1 - cpu0,
        hold_errors,
        db1 - db0,
        redis1 - redis0,
        commits1 - commits0,
    )
    run.storm, run.logins = storm, logins
    return run


async def commits(db_url: str | None) -> int:
    """Transactions committed so far in the database of `db_url`; 0 without one.

    pg_stat_database, which busy backends update about once a second: the count at
    the window's start may lag by up to a second, so commits per message is within
    about 1/duration (12 % of an 8 s window), on the high side."""
    if db_url is None:
        return 0
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()


def redis_cpu_seconds() -> float:
    """CPU time of the redis-server that FANOUT_URL names (its title has its port); 0
    without FANOUT_URL."""
    url = os.environ.get("FANOUT_URL")
    if not url:
        return 0.0
    return cpu_seconds_of("redis-server", f":{URL(url).port or 6379}")


async def login_storm(
    url: str, emails: list[str], concurrency: int, start: float, window: tuple[float, float]
) -> list[float]:
    """`concurrency` loops logging in (bcrypt at the server's cost) through the window."""
    latencies: list[float] = []

    async def loop(email: str) -> None:
        await sleep_until(start)
        while time.monotonic() < window[1]:
            began = time.monotonic()
            async with http.post(
                url + "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"login answered {resp.status}")
            if began >= window[0]:
                latencies.append(time.monotonic() - began)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(loop(email) for email in emails[:concurrency]))
    return latencies


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} · {machine()} · load {load()}")
    print(
        f"{args.idle} idle + {args.active} active connections, {args.processes} client "
        f"process(es), warm-up {args.warmup} s, window {args.duration} s, "
        f"think {args.think_ms} ms\n"
    )
    print(
        "| target | msgs/s | ack p50/p95/p99 ms | first token p50/p95/p99 ms "
        "| end p50/p95/p99 ms | server CPU/msg | PostgreSQL CPU/msg | commits/msg "
        "| Redis CPU/msg | client CPU/msg | mem/conn | errors |"
    )
    print("| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        p = run.phase

        def trio(which: str, p: PhaseResult = p) -> str:
            return " / ".join(f"{p.ms(which, q):.1f}" for q in (0.5, 0.95, 0.99))

        print(
            f"| {run.name} | {p.rate:,.0f} | {trio('ack')} | {trio('first')} | {trio('end')} "
            f"| {run.cpu_per_msg_us:,.0f} µs | {run.db_cpu_per_msg_us:,.0f} µs "
            f"| {run.commits / max(1, p.completed):.2f} | {run.redis_cpu_per_msg_us:,.0f} µs "
            f"| {run.client_cpu_per_msg_us:,.0f} µs "
            f"| {run.mem_per_conn / 1024:.1f} KB | {run.errors} |"
        )
    print()
    for run in runs:
        if run.target not in ("ours", "baseline"):
            continue
        for ceiling in runs:
            if ceiling.round == run.round and ceiling.target in CEILINGS:
                print(
                    f"{run.name} / {ceiling.name}: "
                    f"{run.phase.rate / max(ceiling.phase.rate, 1e-9):.0%} of the messages per "
                    f"second; server CPU per message {run.cpu_per_msg_us:,.0f} µs + PostgreSQL "
                    f"{run.db_cpu_per_msg_us:,.0f} µs against {ceiling.cpu_per_msg_us:,.0f} µs"
                )
    for run in runs:
        if run.storm is not None and run.logins is not None:
            quiet, storm = run.phase, run.storm
            print(
                f"\n{run.name}, login storm ({args.login_storm} concurrent logins, "
                f"{len(run.logins) / args.duration:.1f} logins/s, login p50 "
                f"{percentile(run.logins, 0.5) * 1000:.0f} ms):"
            )
            for which in ("ack", "first", "end"):
                q, s_ = quiet.ms(which, 0.99), storm.ms(which, 0.99)
                print(f"  chat {which} p99: {q:.1f} ms quiet, {s_:.1f} ms in the storm", end="")
                print(f" ({s_ - q:+.1f} ms)")
            print(f"  chat msgs/s: {quiet.rate:,.0f} quiet, {storm.rate:,.0f} in the storm")
        errors = run.summary()["errors"]
        if any(errors.values()):
            print(f"{run.name} errors: {errors}")
        if run.stored is not None:
            print(f"{run.name} stored: {run.stored}")


CEILINGS = {
    "ceiling": "reply",  # a reply's frames in one write: the least a server can do
    "ceiling-frames": "frame",  # one send_frame a frame (the earlier ceiling)
}


async def measure_ours(
    name: str, root: Path, args: argparse.Namespace, workdir: Path
) -> tuple[Run, list[tuple[int, str]]]:
    """Our server (from checkout `root`) on a fresh database; then the check in PostgreSQL."""
    total = args.idle + args.active
    async with bench_database() as db_url:
        env = {"DB_POOL_MAX": str(args.pool), "SEMANTIC_RETRIEVAL": args.semantic}
        async with chat_server(db_url, workdir, root, **env) as server:
            hashed = password_hash(12) if args.login_storm else "x"
            rows = await insert_users(db_url, total, hashed)
            emails = [email for _, email in rows]
            ids = [user_id for user_id, _ in rows]
            users = list(zip(ids, mint_tokens(ids), strict=True))
            run = await measure(name, server, server.ws_url, users, args, emails, db_url)
            records = run.phase.records + (run.storm.records if run.storm else [])
            run.stored = await verify_stored(db_url, records)
    return run, users


async def main_async(args: argparse.Namespace) -> list[Run]:
    raise_nofile()
    tokens = reply_tokens()
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    runs: list[Run] = []
    targets: list[tuple[str, Path | str]] = [("ours", ROOT)]
    if args.baseline:
        targets.append(("baseline", args.baseline))
    if not args.no_ceiling:
        targets += [(name, writes) for name, writes in CEILINGS.items() if name in args.ceilings]
    users = [(i, "x") for i in range(args.idle + args.active)]  # the ceilings check no token
    for k in range(args.rounds):
        # Alternate the order from round to round, so a drift of the machine's speed
        # does not always favour the same target.
        for name, where in targets if k % 2 == 0 else targets[::-1]:
            label = name if args.rounds == 1 else f"{name} ({k + 1})"
            if isinstance(where, Path):
                run, _ = await measure_ours(label, where, args, workdir)
            else:
                async with ceiling_server(workdir, tokens, where) as ceiling:
                    ws_url = ceiling.url.replace("http", "ws") + "/ws"
                    run = await measure(label, ceiling, ws_url, users, args)
            run.target, run.round = name, k
            runs.append(run)
    report(runs, args)
    if args.json:
        figures = orjson.dumps([r.summary() for r in runs], option=orjson.OPT_INDENT_2)
        await asyncio.to_thread(Path(args.json).write_bytes, figures)
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000, help="connections held, silent")
    parser.add_argument("--active", type=int, default=100, help="connections that chat")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--ramp", type=float, default=500, help="connections opened per second")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause between messages")
    parser.add_argument("--pool", type=int, default=10, help="the server's DB_POOL_MAX")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare servers")
    parser.add_argument(
        "--ceilings",
        default="ceiling,ceiling-frames",
        type=lambda s: s.split(","),
        help="the bare servers, comma-separated: 'ceiling' (a reply's frames in one write), "
        "'ceiling-frames' (a send_frame a frame)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="every target this many times")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout whose server runs beside ours (A/B)"
    )
    parser.add_argument("--login-storm", type=int, default=0, help="concurrent logins, window 2")
    parser.add_argument("--json", help="write the figures to this file too")
    parser.add_argument("--profile", help="py-spy the server during the window into this file")
    parser.add_argument(
        "--semantic", default="0", choices=["0", "1"], help="our server's SEMANTIC_RETRIEVAL"
    )
    args = parser.parse_args(argv)
    if args.baseline:
        args.baseline = args.baseline.resolve()
    return args


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
