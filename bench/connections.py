"""How memory and chat latency grow with the connections held, in one invocation.

    WORKERS=6 python bench/connections.py --idle 1000,100000 --active 100 --ramp 1500

For each count of idle connections (in the order given; with `--rounds`, the order
alternates), our server (`python run_server.py`, the environment's WORKERS) gets a
fresh database, that many idle connections plus `--active` chatting ones, and the chat
window of `bench/ws_chat.py` (whose other options all apply: `--duration`, `--pool`,
`--processes` …); no ceiling. The load generator adds client processes and source
addresses as the count needs (`bench/loadgen.py`). Reported for each: connections held,
memory per connection (the RSS of the server and all its workers after opening them,
minus before, divided by the connections), the chat's first-token and end latencies,
messages/s, server CPU (all workers) and PostgreSQL CPU per message, errors, the check
in PostgreSQL; then each count's first-token p99 against the smallest count's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, load, machine, raise_nofile, write_json
from bench.ws_chat import Run, measure_ours
from bench.ws_chat import parse_args as chat_args


async def main_async(counts: list[int], args: argparse.Namespace) -> list[Run]:
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    runs: list[Run] = []
    for k in range(args.rounds):
        for idle in counts if k % 2 == 0 else counts[::-1]:
            args.idle = idle
            label = f"{idle:,} idle" + ("" if args.rounds == 1 else f" ({k + 1})")
            began = time.strftime("%H:%M:%S", time.gmtime())
            run, _ = await measure_ours(label, ROOT, args, workdir)
            run.round = k
            print(f"{began} UTC, load {load()}: {summary_line(run)}", flush=True)
            runs.append(run)
    report(runs, args)
    if args.json:
        await write_json(args.json, [r.summary() for r in runs])
    return runs


def summary_line(run: Run) -> str:
    p = run.phase
    return (
        f"{run.name}: held {run.held:,}, {run.mem_per_conn / 1024:.1f} KB a connection, "
        f"first token p99 {p.ms('first', 0.99):.1f} ms, {p.rate:,.0f} msgs/s, "
        f"errors {run.errors}, stored {run.stored}"
    )


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print(f"\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC · {machine()} · load {load()}")
    print(
        f"+ {args.active} chatting, warm-up {args.warmup} s, window {args.duration} s, "
        f"ramp {args.ramp:,.0f}/s, pool {args.pool} a worker\n"
    )
    print(
        "| idle | held | mem/conn | first token p50/p95/p99 ms | end p50/p95/p99 ms | msgs/s "
        "| server CPU/msg | PostgreSQL CPU/msg | client CPU/msg | errors | lost / duplicated |"
    )
    print("| ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for run in runs:
        p, stored = run.phase, run.stored or {}
        print(
            f"| {run.name} | {run.held:,} | {run.mem_per_conn / 1024:.1f} KB | {p.trio('first')} "
            f"| {p.trio('end')} | {p.rate:,.0f} | {run.cpu_per_msg_us:,.0f} µs "
            f"| {run.db_cpu_per_msg_us:,.0f} µs | {run.client_cpu_per_msg_us:,.0f} µs "
            f"| {run.errors} | {stored.get('lost')} / {stored.get('duplicated')} |"
        )
    print()
    for k in range(args.rounds):
        mine = sorted((r for r in runs if r.round == k), key=lambda r: r.held)
        for run in mine[1:]:
            ratio = run.phase.ms("first", 0.99) / mine[0].phase.ms("first", 0.99)
            print(f"{run.name} / {mine[0].name}: first-token p99 × {ratio:.2f}")
    for run in runs:
        errors = run.summary()["errors"]
        if any(errors.values()):
            print(f"{run.name} errors: {errors}")


def parse_args(argv: list[str] | None = None) -> tuple[list[int], argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument(
        "--idle",
        default="1000,100000",
        type=lambda s: [int(n) for n in s.split(",")],
        help="counts of idle connections, comma-separated",
    )
    ours, rest = parser.parse_known_args(argv)
    args = chat_args(["--no-ceiling", *rest])
    if args.baseline:
        raise SystemExit("--baseline is not supported here: run bench/ws_chat.py for an A/B")
    return ours.idle, args


if __name__ == "__main__":
    asyncio.run(main_async(*parse_args()))
