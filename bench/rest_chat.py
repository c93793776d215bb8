"""REST `POST /api/v1/chat/chat` requests per second at 16 and 64 concurrent clients.

    python bench/rest_chat.py [--clients 16,64] [--duration 10] [--processes 1]
                              [--rounds 2] [--baseline /path/to/another/checkout]

Each client loops: post a question (with its own `id`), read the answer, repeat. Our
server (`python run_server.py`, mock LLM without delay, a 20-token answer) is measured
against the ceiling's bare `POST /chat` (bench/ceiling.py) in the same run; every
answered message and reply is then checked in PostgreSQL (stored exactly once).
With `--baseline`, another checkout's server is measured too, alternating with ours
round by round (`--rounds`), each on a fresh database: an A/B in one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yarl import URL

from bench.harness import (
    QUESTION,
    ROOT,
    Process,
    bench_database,
    ceiling_server,
    chat_server,
    insert_users,
    load,
    machine,
    mint_tokens,
    postgres_cpu_seconds,
    profile,
    raise_nofile,
    reply_tokens,
    sleep_until,
    verify_stored,
)
from bench.loadgen import LoadGen, PhaseResult


async def measure(
    server: Process,
    url: str,
    users: list[tuple[int, str]],
    clients: int,
    args: argparse.Namespace,
    spy: str | None = None,
    database: str | None = None,
) -> tuple[PhaseResult, float, float]:
    """One window: the phase, the server's and PostgreSQL's CPU seconds in it."""
    async with LoadGen(url, users, 0, args.processes, QUESTION) as gen:
        start, window = gen.window(args.warmup, args.duration)
        rest = asyncio.create_task(gen.rest(url, clients, start, window))
        await sleep_until(window[0])
        # PostgreSQL CPU: the backends of our database only (none for the ceiling).
        pg_cpu = postgres_cpu_seconds if database else lambda _: 0.0
        cpu0, db0 = server.cpu(), await asyncio.to_thread(pg_cpu, database)
        profiler = profile(server, spy, args.duration) if spy else None
        await sleep_until(window[1])
        cpu1, db1 = server.cpu(), await asyncio.to_thread(pg_cpu, database)
        phase = await rest
        if profiler is not None:
            await asyncio.to_thread(profiler.wait)
    return phase, cpu1 - cpu0, db1 - db0


def row(name: str, clients: int, phase: PhaseResult, cpu_s: float, db_s: float) -> str:
    n = max(1, phase.completed)
    lat = " / ".join(f"{phase.ms('end', q):.1f}" for q in (0.5, 0.95, 0.99))
    return (
        f"| {name} | {clients} | {phase.rate:,.0f} | {lat} | {cpu_s / n * 1e6:,.0f} µs "
        f"| {db_s / n * 1e6:,.0f} µs | {phase.client_cpu_s / n * 1e6:,.0f} µs "
        f"| {sum(phase.errors.values())} |"
    )


async def serve_ours(
    name: str, root: Path, clients: list[int], args: argparse.Namespace, workdir: Path
) -> tuple[dict[int, tuple[PhaseResult, float, float]], dict[str, int]]:
    """Our server (from checkout `root`) on a fresh database: every window, then the check."""
    out = {}
    async with (
        bench_database() as db_url,
        chat_server(db_url, workdir, root, DB_POOL_MAX=str(args.pool)) as server,
    ):
        rows = await insert_users(db_url, max(clients), "x")
        ids = [user_id for user_id, _ in rows]
        users = list(zip(ids, mint_tokens(ids), strict=True))
        for n in clients:
            spy = None
            if args.profile and name == "ours":
                spy = str(Path(args.profile).with_name(f"{n}-{Path(args.profile).name}"))
            url = server.url + "/api/v1/chat/chat"
            out[n] = await measure(server, url, users[:n], n, args, spy, URL(db_url).path[1:])
        records = [r for phase, _, _ in out.values() for r in phase.records]
        stored = await verify_stored(db_url, records)
    return out, stored


async def serve_ceiling(
    clients: list[int], args: argparse.Namespace, workdir: Path
) -> dict[int, tuple[PhaseResult, float, float]]:
    out = {}
    users = [(i, "x") for i in range(max(clients))]  # the ceiling checks no token
    async with ceiling_server(workdir, reply_tokens()) as ceiling:
        for n in clients:
            out[n] = await measure(ceiling, ceiling.url + "/chat", users[:n], n, args)
    return out


async def main_async(args: argparse.Namespace) -> None:
    raise_nofile()
    clients = [int(c) for c in args.clients.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    targets = [("ours", ROOT)]
    if args.baseline:
        targets.append(("baseline", args.baseline))
    if not args.no_ceiling:
        targets.append(("ceiling", None))
    lines, checks = [], []
    rates: dict[tuple[str, int], list[float]] = {}
    for k in range(args.rounds):
        # Alternate the order from round to round, so a drift of the machine's speed
        # does not always favour the same target.
        for name, root in targets if k % 2 == 0 else targets[::-1]:
            if root is None:
                results = await serve_ceiling(clients, args, workdir)
            else:
                results, stored = await serve_ours(name, root, clients, args, workdir)
                checks.append(f"{name}, round {k + 1}, checked in PostgreSQL: {stored}")
            for n, (phase, cpu_s, db_s) in results.items():
                label = name if args.rounds == 1 else f"{name} ({k + 1})"
                lines.append(row(label, n, phase, cpu_s, db_s))
                rates.setdefault((name, n), []).append(phase.rate)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} · {machine()} · load {load()}")
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
    print()
    for check in checks:
        print(check)
    for n in clients:
        for name, _ in targets:
            if name != "ceiling" and ("ceiling", n) in rates:
                ratios = [
                    f"{a / max(c, 1e-9):.0%}"
                    for a, c in zip(rates[(name, n)], rates[("ceiling", n)], strict=True)
                ]
                print(f"{n} clients: {name} / ceiling = {', '.join(ratios)} of the requests/s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="16,64", help="concurrent clients, comma-separated")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=10, help="the server's DB_POOL_MAX")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="every target this many times")
    parser.add_argument(
        "--baseline", help="another checkout whose server runs beside ours (A/B), e.g. /work/main"
    )
    parser.add_argument(
        "--profile", help="py-spy our server in each window into N-FILE (N: the clients)"
    )
    args = parser.parse_args(argv)
    if args.baseline:
        args.baseline = Path(args.baseline).resolve()
    return args


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
