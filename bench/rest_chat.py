"""REST `POST /api/v1/chat/chat` requests per second at 16 and 64 concurrent clients.

    python bench/rest_chat.py [--clients 16,64] [--duration 10] [--processes 1]

Each client loops: post a question (with its own `id`), read the answer, repeat. Our
server (`python run_server.py`, mock LLM without delay, a 20-token answer) is measured
against the ceiling's bare `POST /chat` (bench/ceiling.py) in the same run; every
answered message and reply is then checked in PostgreSQL (stored exactly once).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    QUESTION,
    Process,
    bench_database,
    ceiling_server,
    chat_server,
    insert_users,
    machine,
    mint_tokens,
    postgres_cpu_seconds,
    raise_nofile,
    reply_tokens,
    sleep_until,
    verify_stored,
)
from bench.loadgen import LoadGen, PhaseResult


async def measure(
    server: Process, url: str, users: list[tuple[int, str]], clients: int, args: argparse.Namespace
) -> tuple[PhaseResult, float, float]:
    """One window: the phase, the server's and PostgreSQL's CPU seconds in it."""
    async with LoadGen(url, users, 0, args.processes, QUESTION) as gen:
        start, window = gen.window(args.warmup, args.duration)
        rest = asyncio.create_task(gen.rest(url, clients, start, window))
        await sleep_until(window[0])
        cpu0, db0 = server.cpu(), await asyncio.to_thread(postgres_cpu_seconds)
        await sleep_until(window[1])
        cpu1, db1 = server.cpu(), await asyncio.to_thread(postgres_cpu_seconds)
        phase = await rest
    return phase, cpu1 - cpu0, db1 - db0


def row(name: str, clients: int, phase: PhaseResult, cpu_s: float, db_s: float) -> str:
    n = max(1, phase.completed)
    lat = " / ".join(f"{phase.ms('end', q):.1f}" for q in (0.5, 0.95, 0.99))
    return (
        f"| {name} | {clients} | {phase.rate:,.0f} | {lat} | {cpu_s / n * 1e6:,.0f} µs "
        f"| {db_s / n * 1e6:,.0f} µs | {phase.client_cpu_s / n * 1e6:,.0f} µs "
        f"| {sum(phase.errors.values())} |"
    )


async def main_async(args: argparse.Namespace) -> None:
    raise_nofile()
    clients = [int(c) for c in args.clients.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    lines = []
    async with (
        bench_database() as db_url,
        chat_server(db_url, workdir, DB_POOL_MAX=str(args.pool)) as server,
    ):
        rows = await insert_users(db_url, max(clients), "x")
        ids = [user_id for user_id, _ in rows]
        users = list(zip(ids, mint_tokens(ids), strict=True))
        ours = {}
        for n in clients:
            phase, cpu_s, db_s = await measure(
                server, server.url + "/api/v1/chat/chat", users[:n], n, args
            )
            ours[n] = phase
            lines.append(row("ours", n, phase, cpu_s, db_s))
        records = [r for phase in ours.values() for r in phase.records]
        stored = await verify_stored(db_url, records)
    ceilings = {}
    if not args.no_ceiling:
        async with ceiling_server(workdir, reply_tokens()) as ceiling:
            for n in clients:
                phase, cpu_s, db_s = await measure(
                    ceiling, ceiling.url + "/chat", users[:n], n, args
                )
                ceilings[n] = phase
                lines.append(row("ceiling", n, phase, cpu_s, 0.0))
    print(f"\n{time.strftime('%Y-%m-%d')} · {machine()}")
    print(
        f"{args.processes} client process(es), warm-up {args.warmup} s, window {args.duration} s\n"
    )
    print(
        "| target | clients | requests/s | latency p50/p95/p99 ms | server CPU/req "
        "| PostgreSQL CPU/req | client CPU/req | errors |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for line in lines:
        print(line)
    print(f"\nours, checked in PostgreSQL: {stored}")
    for n in clients:
        if n in ceilings:
            ratio = ours[n].rate / max(ceilings[n].rate, 1e-9)
            print(f"\n{n} clients: ours / ceiling = {ratio:.0%} of the requests per second")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="16,64", help="concurrent clients, comma-separated")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=10, help="the server's DB_POOL_MAX")
    parser.add_argument("--no-ceiling", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
