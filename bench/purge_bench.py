"""The history purge under chat traffic: how long 1,000,000 old rows take, and what chat feels.

    DATABASE_URL=postgresql://user@host/postgres python bench/purge_bench.py [--rows N]

Creates a throwaway database on DATABASE_URL's server (dropped at the end; without
DATABASE_URL, the embedded PostgreSQL under var/bench), starts the real app in-process
on a free port (mock LLM, LLM_TOKEN_DELAY_MS=0, no chat rate limit), signs up users,
inserts N rows older than the retention for one user with one INSERT … SELECT, then:

1. purge: the app's own PurgeJob.run_once() while CLIENTS loops post to
   POST /api/v1/chat/chat, one request at a time each;
2. baseline: the same traffic for as long as the purge took, with no purge.

Prints rows deleted, purge time, rows/s, chat requests completed and the chat latency
p50/p99/max in each period, with the purge/baseline ratio. The clients share the
server's event loop (one process, as a small deployment would be), so latency
includes the loop's own queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server import keys
from server.app import create_app
from server.db import scratch
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-key-that-is-long-enough-for-every-hmac-0123456789abcdef"
PASSWORD = "correct horse battery"


@dataclass
class Traffic:
    """Chat request latencies, each with the monotonic time it started."""

    samples: list[tuple[float, float]]
    errors: int = 0

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
    http: aiohttp.ClientSession, base: str, token: str, traffic: Traffic, stop: asyncio.Event
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    n = 0
    while not stop.is_set():
        n += 1
        started = time.monotonic()
        async with http.post(
            f"{base}/api/v1/chat/chat",
            json={"message": f"how do I reset my password? ({n})"},
            headers=headers,
        ) as resp:
            await resp.read()
            ok = resp.status == 200
        if ok:
            traffic.samples.append((started, time.monotonic() - started))
        else:
            traffic.errors += 1


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


async def bench(url: str, rows: int, clients: int, warmup_s: float) -> None:
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
                await conn.execute(
                    'INSERT INTO chat_history (user_id, message, is_user_message, "timestamp")'
                    " SELECT $1, 'an old message, number ' || g, g % 2 = 1,"
                    "  now() - interval '40 days' - g * interval '1 second'"
                    " FROM generate_series(1, $2) g",
                    bench_user,
                    rows,
                )
                await conn.execute("VACUUM ANALYZE chat_history")
                print(f"inserted {rows:,} old rows in {time.perf_counter() - began:.1f} s")
            finally:
                await conn.close()

            traffic = Traffic([])
            stop = asyncio.Event()
            loops = [
                asyncio.create_task(chat_loop(http, base, token, traffic, stop)) for token in tokens
            ]
            await asyncio.sleep(warmup_s)

            job = app[keys.PURGE]
            purge_start = time.monotonic()
            result = await job.run_once()
            purge_end = time.monotonic()
            purge_s = purge_end - purge_start

            await asyncio.sleep(purge_s)
            baseline_end = time.monotonic()
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
    print(f"chat traffic: {clients} clients, POST /api/v1/chat/chat, one request at a time each")
    during = describe("purge", traffic.between(purge_start, purge_end), purge_s)
    base_stats = describe("baseline", traffic.between(purge_end, baseline_end), purge_s)
    ratios = {k: during[k] / base_stats[k] for k in ("p50", "p99", "max", "req_s")}
    print(
        f"  ratio     p50 x{ratios['p50']:.2f}  p99 x{ratios['p99']:.2f}"
        f"  max x{ratios['max']:.2f}  throughput x{ratios['req_s']:.2f}"
    )
    if traffic.errors:
        print(f"  chat errors: {traffic.errors}")
    if result.deleted < rows:
        print(f"warning: only {result.deleted:,} of {rows:,} rows were deleted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic first")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")

    admin = scratch.admin_url(ROOT / "var" / "bench")
    url = asyncio.run(scratch.create_database(admin, "chat_bench"))
    try:
        asyncio.run(bench(url, args.rows, args.clients, args.warmup))
    finally:
        asyncio.run(scratch.drop_database(admin, url))


if __name__ == "__main__":
    main()
