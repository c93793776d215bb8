"""The semantic stage's cost under chat load, and whether it delays other connections.

    python bench/semantic_load.py [--active 50] [--probes 20] [--repeaters 5]
        [--duration 10] [--rounds 2] [--questions distinct|repeat] [--baseline DIR]

Each round runs our server (`python run_server.py`, the shipped knowledge base,
LLM_TOKEN_DELAY_MS=0) with SEMANTIC_RETRIEVAL off and on (and, with `--baseline`,
another checkout's server with it on), alternating the order from round to round.
Against each, for `--duration` s after `--warmup` s:

- `--active` connections chat back to back (send, wait for `end`, repeat). With
  `--questions distinct` every message is a question never sent before in the run
  (SQuAD dev questions and the knowledge-base paraphrases, then the same with a
  number added): the embedding cache never answers them. With `repeat` they all ask
  the same question (cached after its first embedding, as ws_chat.py's workload).
- `--repeaters` connections chat the same way, always asking one question of their
  own: after its first embedding, a cached one. Their first-token latency is the
  control: it should not grow while the others' questions wait for the model.
- `--probes` connections send a `ping` every 20 ms and time the `pong`: frames of
  connections that ask nothing.

Prints messages/s, first-token p50/p95/p99 of each group, pong p50/p99/max, server
CPU per message, and, for each round, the CPU per message with the semantic stage
minus without it (the embedding's cost per question, on the same machine at the same
time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    ROOT,
    bench_database,
    chat_server,
    insert_users,
    load,
    machine,
    mint_tokens,
    percentile,
    raise_nofile,
    sleep_until,
)

KNOWLEDGE = ROOT / "server" / "answers" / "knowledge.json"
DATA = ROOT / "bench" / "data"
REPEATED = "How do I change how often the cleanup runs?"
PING_EVERY_S = 0.02
REPLY_TIMEOUT_S = 60


def question_pool() -> list[str]:
    """Every question of the retrieval sets, in a fixed order."""
    texts = []
    for name in ("kb-paraphrases", "retrieval-eval"):
        path = DATA / name / "queries.jsonl"
        texts += [orjson.loads(line)["text"] for line in path.read_text().splitlines() if line]
    return list(dict.fromkeys(texts))


def distinct_questions() -> itertools.chain[str]:
    """The pool, then the pool again with "(2)", "(3)" … added: never the same text."""
    pool = question_pool()
    again = ((f"{q} ({n})" for q in pool) for n in itertools.count(2))
    return itertools.chain(pool, itertools.chain.from_iterable(again))


@dataclass
class Figures:
    name: str
    completed: int = 0  # the active connections' replies ended in the window
    repeat_completed: int = 0  # the repeaters'
    first: list[float] = field(default_factory=list)  # the active connections'
    repeat_first: list[float] = field(default_factory=list)  # the repeaters'
    pongs: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    niced_cpu_s: float = 0.0  # the embedding thread's (the server's only niced thread)
    errors: Counter[str] = field(default_factory=Counter)
    sent_distinct: int = 0
    sent: int = 0
    semantic: bool = False


async def chat(
    ws: aiohttp.ClientWebSocketResponse,
    ask: object,
    window: tuple[float, float],
    into: list[float],
    figures: Figures,
    prefix: str,
    repeater: bool = False,
) -> None:
    lo, hi = window
    for k in itertools.count():
        if time.monotonic() >= hi:
            return
        question = next(ask) if not isinstance(ask, str) else ask  # type: ignore[call-overload]
        sent = time.monotonic()
        figures.sent += 1
        await ws.send_str(
            orjson.dumps({"type": "message", "id": f"{prefix}-{k}", "text": question}).decode()
        )
        first = None
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while True:
                    frame = orjson.loads((await ws.receive()).data)
                    kind = frame["type"]
                    if kind == "token" and first is None:
                        first = time.monotonic()
                    elif kind == "end":
                        break
                    elif kind == "error":
                        figures.errors[frame.get("code", "error")] += 1
        except (TimeoutError, TypeError, orjson.JSONDecodeError):
            figures.errors["no end"] += 1
            return
        end = time.monotonic()
        if lo <= end < hi and repeater:
            figures.repeat_completed += 1
        elif lo <= end < hi:
            figures.completed += 1
        if lo <= sent < hi:
            into.append((first or end) - sent)


async def probe(
    ws: aiohttp.ClientWebSocketResponse, window: tuple[float, float], figures: Figures
) -> None:
    lo, hi = window
    while time.monotonic() < hi:
        sent = time.monotonic()
        await ws.send_str('{"type":"ping"}')
        frame = orjson.loads((await ws.receive()).data)
        if frame["type"] != "pong":
            figures.errors[f"probe got {frame['type']}"] += 1
        if lo <= sent < hi:
            figures.pongs.append(time.monotonic() - sent)
        await asyncio.sleep(PING_EVERY_S)


def niced_cpu_seconds(pid: int) -> float:
    """CPU time of the process's threads running at a positive niceness: the embedding
    thread (server/answers/embedding_worker.py lowers its own priority)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[16]) > 0:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def measure(name: str, root: Path, semantic: bool, args: argparse.Namespace) -> Figures:
    figures = Figures(name, semantic=semantic)
    workdir = Path(tempfile.mkdtemp(prefix="semantic-bench-"))
    total = args.active + args.repeaters + args.probes
    env = {"SEMANTIC_RETRIEVAL": "1" if semantic else "0", "KNOWLEDGE_PATH": str(KNOWLEDGE)}
    async with bench_database() as db_url, chat_server(db_url, workdir, root, **env) as server:
        rows = await insert_users(db_url, total, "x")
        tokens = mint_tokens([user_id for user_id, _ in rows])
        async with aiohttp.ClientSession() as http:
            sockets = []
            for token in tokens:
                ws = await http.ws_connect(
                    server.ws_url, headers={"Authorization": f"Bearer {token}"}, max_msg_size=0
                )
                ready = orjson.loads((await ws.receive()).data)
                assert ready["type"] == "ready", ready
                sockets.append(ws)
            active = sockets[: args.active]
            repeaters = sockets[args.active : args.active + args.repeaters]
            probes = sockets[args.active + args.repeaters :]
            start = time.monotonic() + 0.2
            window = (start + args.warmup, start + args.warmup + args.duration)
            ask = distinct_questions() if args.questions == "distinct" else REPEATED
            tasks = [
                chat(ws, ask, window, figures.first, figures, f"a{n}")
                for n, ws in enumerate(active)
            ]
            tasks += [
                chat(ws, f"{REPEATED} ({n})", window, figures.repeat_first, figures, f"r{n}", True)
                for n, ws in enumerate(repeaters)
            ]
            tasks += [probe(ws, window, figures) for ws in probes]
            running = asyncio.gather(*tasks)
            await sleep_until(window[0])
            cpu0, niced0 = server.cpu(), niced_cpu_seconds(server.pid)
            await sleep_until(window[1])
            figures.cpu_s = server.cpu() - cpu0
            figures.niced_cpu_s = niced_cpu_seconds(server.pid) - niced0
            await running
            for ws in sockets:
                await ws.close()
    return figures


def report(runs: list[Figures], args: argparse.Namespace) -> None:
    def trio(values: list[float], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> str:
        return " / ".join(f"{percentile(values, q) * 1000:.1f}" for q in qs) if values else "–"

    print(f"\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC · {machine()} · load {load()}")
    print(
        f"{args.active} chatting ({args.questions} questions) + {args.repeaters} repeating "
        f"one question + {args.probes} pinging every {PING_EVERY_S * 1000:.0f} ms; "
        f"warm-up {args.warmup} s, window {args.duration} s\n"
    )
    print(
        "| target | msgs/s | repeaters' msgs/s | first token p50/p95/p99 ms | repeaters' first "
        "token p50/p95/p99 ms | pong p50/p99/max ms | server CPU/msg | errors |"
    )
    print("| --- | ---: | ---: | --- | --- | --- | ---: | --- |")
    for run in runs:
        rate = run.completed / args.duration
        both = run.completed + run.repeat_completed
        cpu = run.cpu_s / max(1, both) * 1000
        errors = ", ".join(f"{k} {v}" for k, v in run.errors.items()) or "0"
        print(
            f"| {run.name} | {rate:,.0f} | {run.repeat_completed / args.duration:,.0f} "
            f"| {trio(run.first)} | {trio(run.repeat_first)} "
            f"| {trio(run.pongs, (0.5, 0.99, 1.0))} | {cpu:.2f} ms | {errors} |"
        )
    print()
    by_round: dict[str, dict[bool, Figures]] = {}
    for run in runs:
        if not run.name.startswith("baseline"):
            by_round.setdefault(run.name.split("(")[-1], {})[run.semantic] = run
    for key, pair in by_round.items():
        if len(pair) == 2:
            # What the server spent beyond the same messages' cost with semantic off,
            # per question the active connections asked (the repeaters' are cached).
            on, off = pair[True], pair[False]
            per_msg_off = off.cpu_s / max(1, off.completed + off.repeat_completed)
            extra = on.cpu_s - per_msg_off * (on.completed + on.repeat_completed)
            per_question = extra / max(1, on.completed) * 1000
            thread = on.niced_cpu_s / max(1, on.completed) * 1000
            print(
                f"round {key.rstrip(')')}: the semantic stage costs {per_question:.2f} ms of "
                f"server CPU per {args.questions} question asked, the embedding thread "
                f"{thread:.2f} ms of it"
            )


async def main_async(args: argparse.Namespace) -> list[Figures]:
    raise_nofile()
    targets: list[tuple[str, Path, bool]] = [("off", ROOT, False), ("on", ROOT, True)]
    if args.baseline:
        targets.append(("baseline on", args.baseline, True))
    runs = []
    for k in range(args.rounds):
        for name, root, semantic in targets if k % 2 == 0 else targets[::-1]:
            runs.append(await measure(f"{name} ({k + 1})", root, semantic, args))
    report(runs, args)
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--active", type=int, default=50, help="connections that chat")
    parser.add_argument("--repeaters", type=int, default=5, help="connections asking one question")
    parser.add_argument("--probes", type=int, default=20, help="connections that only ping")
    parser.add_argument("--questions", choices=["distinct", "repeat"], default="distinct")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout, run with semantic on")
    args = parser.parse_args(argv)
    if args.baseline:
        args.baseline = args.baseline.resolve()
    return args


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
