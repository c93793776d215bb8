"""The history purge under chat traffic: how long 1,000,000 old rows take, and what chat feels.

    DATABASE_URL=postgresql://user@host/postgres python bench/purge_bench.py [--rows N]
        [--rounds 2] [--baseline /path/to/another/checkout]

Creates a throwaway database on DATABASE_URL's server (dropped at the end; without
DATABASE_URL, the embedded PostgreSQL under var/bench), starts the real app in-process
on a free port (mock LLM, LLM_TOKEN_DELAY_MS=0, no chat rate limit), signs up users,
inserts N rows older than the retention for one user with one INSERT … SELECT (half
questions with client ids, half their replies one second later, one a second, 40 days
old and more, as the server stores them: with their chat_keys rows where the checkout
has that table, and in the daily partitions the server would have made for those days
where it partitions chat_history), then:

CLIENTS loops post to POST /api/v1/chat/chat, one request at a time each (as fast as
they are answered, or with `--rate R` paced to R requests a second in all, each timed
from when it was due: a server not run flat out, where a stall shows and queueing
does not), for a warm-up
and then four windows of WINDOW seconds: two without the purge (`before 1`, `before 2`),
one that starts with the app's own PurgeJob.run_once() (`purge`; longer when the purge
is), and one after it (`after`). Chat p99 over a window of a few seconds holds 1,000 and
more requests, where the purge's own second held 100-500: a stall that reaches more than
one request in a hundred still shows, and one slow request alone no longer decides.

Prints rows deleted, purge time, rows/s, and for each window the chat requests completed
and latency p50/p99/max; then the purge window's ratio to `before 2` beside the
control, `before 2` to `before 1` (two windows without a purge: the noise), and the
latency of the requests that started while the purge ran. The clients share the
server's event loop (one process, as a small deployment would be), so latency
includes the loop's own queueing.

With `--baseline DIR`, another checkout's server (e.g. main before a change) is
measured too, each run in a process of its own on a fresh database, alternating the
order round by round (`--rounds`): an A/B in one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

# The checkout whose server is measured: this one, or --baseline's (a child process).
sys.path.insert(0, os.environ.get("PURGE_BENCH_ROOT") or str(Path(__file__).resolve().parents[1]))

from server import keys
from server.app import create_app
from server.db import scratch
from server.settings import Settings

ROOT = Path(sys.path[0])
SECRET = "bench-secret-key-that-is-long-enough-for-every-hmac-0123456789abcdef"
PASSWORD = "correct horse battery"


@dataclass
class Traffic:
    """Chat request latencies, each with the monotonic time it started."""

    samples: list[tuple[float, float]]
    errors: int = 0
    kinds: set[str] = field(default_factory=set)  # each error's status and body, once

    def between(self, start: float, end: float) -> list[float]:
        return [lat for t, lat in self.samples if start <= t < end]


async def signup(http: aiohttp.ClientSession, base: str) -> tuple[int, str]:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    async with http.post(
        f"{base}/api/v1/auth/signup", json={"email": email, "password": PASSWORD}
    ) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    return body["id"], body["access_token"]


async def chat_loop(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    traffic: Traffic,
    stop: asyncio.Event,
    interval: float = 0.0,
) -> None:
    """One request at a time; with `interval`, one every `interval` seconds (open loop),
    each timed from when it was due, so a stall counts for every request it delays."""
    headers = {"Authorization": f"Bearer {token}"}
    n = 0
    due = time.monotonic()
    while not stop.is_set():
        n += 1
        if interval:
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            started = due
        else:
            started = time.monotonic()
        async with http.post(
            f"{base}/api/v1/chat/chat",
            json={"message": f"how do I reset my password? ({n})"},
            headers=headers,
        ) as resp:
            body = await resp.read()
            ok = resp.status == 200
        if ok:
            traffic.samples.append((started, time.monotonic() - started))
        else:
            traffic.errors += 1
            traffic.kinds.add(f"{resp.status} {body[:200].decode(errors='replace')}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def describe(label: str, latencies: list[float], seconds: float) -> dict[str, float]:
    stats = {
        "requests": len(latencies),
        "req_s": len(latencies) / seconds,
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": max(latencies, default=float("nan")) * 1000,
        "mean": (statistics.fmean(latencies) if latencies else float("nan")) * 1000,
    }
    print(
        f"  {label:<9} {stats['requests']:>6} requests ({stats['req_s']:.0f}/s)"
        f"  p50 {stats['p50']:7.1f} ms  p99 {stats['p99']:7.1f} ms  max {stats['max']:7.1f} ms"
    )
    return stats


async def insert_old_rows(conn: asyncpg.Connection, user_id: int, rows: int) -> None:
    """`rows` history rows of `user_id` from 40 days old back, one a second: questions with
    client ids and, a second later, their replies (and their chat_keys rows, made by the
    table's trigger, where it exists), in the daily partitions the server would have made
    where it partitions."""
    partitioned = await conn.fetchval(
        "SELECT relkind = 'p' FROM pg_class WHERE oid = 'chat_history'::regclass"
    )
    newest = await conn.fetchval("SELECT now() - interval '40 days'")
    if partitioned:
        from server.db import partitions

        day = partitions.day_start(newest - timedelta(seconds=rows))
        while day <= newest:
            await partitions.create_partition(conn, day)
            day += partitions.DAY
    conversation = await conn.fetchval(
        "INSERT INTO conversations (user_id, title) VALUES ($1, 'old') RETURNING id", user_id
    )
    base = await conn.fetchval("SELECT nextval('chat_history_id_seq')")
    await conn.execute("SELECT setval('chat_history_id_seq', $1)", base + rows)
    await conn.execute(
        "INSERT INTO chat_history (id, user_id, message, is_user_message, client_id, reply_to,"
        ' conversation_id, "timestamp")'
        " SELECT $1 + g, $2, CASE WHEN g % 2 = 1 THEN 'an old question, number '"
        "  ELSE 'an old reply, number ' END || g, g % 2 = 1,"
        "  CASE WHEN g % 2 = 1 THEN 'old-' || g END, CASE WHEN g % 2 = 0 THEN $1 + g - 1 END,"
        "  $4, $5::timestamptz - ($3 - g) * interval '1 second'"
        " FROM generate_series(1, $3) g",
        base,
        user_id,
        rows,
        conversation,
        newest,
    )
    if await conn.fetchval("SELECT to_regclass('chat_keys') IS NOT NULL"):
        await conn.execute("VACUUM ANALYZE chat_keys")  # filled by its trigger
    await conn.execute("VACUUM ANALYZE chat_history")


WINDOWS = ("before 1", "before 2", "purge", "after")


def windows(
    purge_start: float, purge_end: float, window_s: float
) -> dict[str, tuple[float, float]]:
    """The four windows (start, end) around a purge: two before it, the one it starts (as
    long as the purge when that is longer), one after."""
    purge_to = max(purge_end, purge_start + window_s)
    return {
        "before 1": (purge_start - 2 * window_s, purge_start - window_s),
        "before 2": (purge_start - window_s, purge_start),
        "purge": (purge_start, purge_to),
        "after": (purge_to, purge_to + window_s),
    }


async def bench(
    url: str, rows: int, clients: int, warmup_s: float, window_s: float, rate: float = 0.0
) -> dict[str, object]:
    settings = Settings.from_env(
        {},
        database_url=url,
        secret_key=SECRET,
        llm_token_delay_ms=0.0,
        chat_rate_per_minute=0,
        bcrypt_rounds=4,
        purge_cron="0 0 1 1 *",  # the bench runs the purge itself
        db_pool_min=2,
        db_pool_max=10,
        log_level="WARNING",
        var_dir=ROOT / "var" / "bench",
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients + 4)) as http:
            bench_user, _ = await signup(http, base)
            tokens = [(await signup(http, base))[1] for _ in range(clients)]

            conn = await asyncpg.connect(url)
            try:
                began = time.perf_counter()
                await insert_old_rows(conn, bench_user, rows)
                print(f"inserted {rows:,} old rows in {time.perf_counter() - began:.1f} s")
            finally:
                await conn.close()

            traffic = Traffic([])
            stop = asyncio.Event()
            interval = clients / rate if rate else 0.0
            loops = [
                asyncio.create_task(chat_loop(http, base, token, traffic, stop, interval))
                for token in tokens
            ]
            await asyncio.sleep(warmup_s + 2 * window_s)

            job = app[keys.PURGE]
            purge_start = time.monotonic()
            result = await job.run_once()
            purge_end = time.monotonic()
            purge_s = purge_end - purge_start

            spans = windows(purge_start, purge_end, window_s)
            await asyncio.sleep(spans["after"][1] - time.monotonic())
            stop.set()
            await asyncio.gather(*loops)
    finally:
        await runner.cleanup()

    assert result.status == "ok", result
    print(
        f"purge: {result.deleted:,} history rows (+{result.deleted_other} other) deleted"
        f" in {purge_s:.2f} s = {result.deleted / purge_s:,.0f} rows/s"
        f" (batches of {settings.purge_batch_size})"
    )
    pace = f", {rate:g} requests/s in all (open loop)" if rate else ", as fast as answered"
    print(f"chat traffic: {clients} clients, POST /api/v1/chat/chat, one at a time each{pace}")
    stats = {
        name: describe(name, traffic.between(*spans[name]), spans[name][1] - spans[name][0])
        for name in WINDOWS
    }
    inside = describe("in purge", traffic.between(purge_start, purge_end), purge_s)
    ratios = {
        "purge": ratio(stats["purge"], stats["before 2"]),
        "control": ratio(stats["before 2"], stats["before 1"]),
        "after": ratio(stats["after"], stats["before 2"]),
    }
    for name, r in ratios.items():
        print(
            f"  {name:<9} / before: p50 x{r['p50']:.2f}  p99 x{r['p99']:.2f}"
            f"  max x{r['max']:.2f}  throughput x{r['req_s']:.2f}"
        )
    if traffic.errors:
        print(f"  chat errors: {traffic.errors}: {sorted(traffic.kinds)}")
    if result.deleted < rows:
        print(f"warning: only {result.deleted:,} of {rows:,} rows were deleted")
    return {
        "deleted": result.deleted,
        "purge_s": purge_s,
        "windows": stats,
        "in_purge": inside,
        "ratios": ratios,
        "errors": traffic.errors,
    }


def ratio(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """`a`'s figures over `b`'s."""
    return {k: a[k] / b[k] for k in ("p50", "p99", "max", "req_s")}


def run_one(args: argparse.Namespace) -> dict[str, object]:
    """One run on a fresh database, in this process (the checkout of PURGE_BENCH_ROOT)."""
    admin = scratch.admin_url(ROOT / "var" / "bench")
    url = asyncio.run(scratch.create_database(admin, "chat_bench"))
    try:
        return asyncio.run(bench(url, args.rows, args.clients, args.warmup, args.window, args.rate))
    finally:
        asyncio.run(scratch.drop_database(admin, url))


def run_child(root: Path, args: argparse.Namespace) -> dict[str, object]:
    """One run of checkout `root`'s server in a process of its own; its result."""
    argv = [sys.executable, __file__, "--one", "--rows", str(args.rows)]
    argv += ["--clients", str(args.clients), "--warmup", str(args.warmup)]
    argv += ["--window", str(args.window), "--rate", str(args.rate)]
    env = {**os.environ, "PURGE_BENCH_ROOT": str(root)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    sys.stdout.write(done.stdout)
    if done.returncode:
        raise RuntimeError(f"{root}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[tuple[str, dict[str, object]]]) -> None:
    print(
        "\n| target | rows deleted | purge s | chat req/s before 1 / before 2 / purge / after"
        " | p99 ms before 1 / before 2 / purge / after | p99 purge / before 2"
        " | p99 control (before 2 / 1) | p99 in the purge itself ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results:
        w, ratios = r["windows"], r["ratios"]
        rates = " / ".join(f"{w[k]['req_s']:.0f}" for k in WINDOWS)
        p99s = " / ".join(f"{w[k]['p99']:.1f}" for k in WINDOWS)
        print(
            f"| {name} | {r['deleted']:,} | {r['purge_s']:.2f}"
            f" | {rates} | {p99s}"
            f" | x{ratios['purge']['p99']:.2f} | x{ratios['control']['p99']:.2f}"
            f" | {r['in_purge']['p99']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic first")
    parser.add_argument("--window", type=float, default=3.0, help="seconds each window lasts")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="chat requests a second in all, paced (open loop); 0: each client as fast as answered",
    )
    parser.add_argument("--rounds", type=int, default=1, help="every target this many times")
    parser.add_argument("--baseline", type=Path, help="another checkout, run beside ours (A/B)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child of the A/B: the result as the last line
        print(json.dumps(run_one(args)))
        return
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    if args.baseline is None and args.rounds == 1:
        run_one(args)
        return
    targets = [("ours", ROOT)]
    if args.baseline is not None:
        targets.append(("baseline", args.baseline.resolve()))
    results = []
    for k in range(args.rounds):
        # Alternate the order, so a drift of the machine's speed favours neither.
        for name, root in targets if k % 2 == 0 else targets[::-1]:
            print(f"\n== {name} ({root}), round {k + 1}, load {os.getloadavg()[0]:.2f}")
            results.append((f"{name} ({k + 1})", run_child(root, args)))
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load"
        f" {' / '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    table(results)


if __name__ == "__main__":
    main()
