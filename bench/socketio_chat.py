"""Ours against python-socketio on aiohttp (what Open WebUI and Chainlit run), in one run.

    python bench/socketio_chat.py [--active 100] [--duration 10] [--rounds 2]

Both get `--active` connections that chat (send, wait for the reply's end, repeat):

- ours: `python run_server.py` (uvloop, PostgreSQL, the mock LLM at 0 delay) driven by
  bench/loadgen.py exactly as `ws_chat.py --idle 0` drives it, every message and reply
  checked in PostgreSQL afterwards;
- Socket.IO: bench/socketio_server.py (python-socketio's AsyncServer on aiohttp and
  uvloop, one `emit` a frame, no database) driven by a client of its own in one
  process, speaking Engine.IO 4 / Socket.IO 5 over aiohttp's WebSocket client: it
  reads each packet's first bytes and parses only the `end`, so the client costs
  little and the server is what is measured.

Prints messages/s, latencies, and the server's CPU per message (PostgreSQL's apart)
for both, round by round, alternating their order.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ws_chat
from bench.harness import (
    BENCH,
    QUESTION,
    load,
    machine,
    percentile,
    raise_nofile,
    reply_tokens,
    self_cpu_seconds,
    sleep_until,
    spawn,
)


async def _sio_chat(
    url: str, active: int, expected_tokens: int, start: float, window: tuple[float, float]
) -> dict[str, Any]:
    """`active` Socket.IO connections chatting through `window`; what they measured."""
    lo, hi = window
    out: dict[str, Any] = {"completed": 0, "first": [], "end": [], "errors": Counter()}
    errors: Counter[str] = out["errors"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def converse(n: int) -> None:
            ws = await http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket")
            try:
                if not (await ws.receive_str()).startswith("0"):  # Engine.IO open
                    errors["no open packet"] += 1
                    return
                await ws.send_str("40")  # Socket.IO connect, namespace /
                if not (await ws.receive_str()).startswith("40"):
                    errors["no connect packet"] += 1
                    return
                await sleep_until(start + n * 0.0005)
                k = 0
                while time.monotonic() < hi:
                    k += 1
                    cid = f"sio-{n}-{k}"
                    sent = time.monotonic()
                    event = orjson.dumps(["message", {"id": cid, "text": QUESTION}])
                    await ws.send_str("42" + event.decode())
                    tokens, first = 0, 0.0
                    while True:
                        data = await ws.receive_str()
                        if data == "2":  # Engine.IO ping
                            await ws.send_str("3")
                        elif data.startswith('42["token"'):
                            tokens += 1
                            first = first or time.monotonic()
                        elif data.startswith('42["end"'):
                            done = time.monotonic()
                            end = orjson.loads(data[2:])[1]
                            if end["id"] != cid or tokens != expected_tokens:
                                errors["end does not match"] += 1
                            break
                        elif not data.startswith(('42["ack"', '42["start"')):
                            errors[f"unexpected {data[:20]}"] += 1
                    if lo <= done < hi:
                        out["completed"] += 1
                    if lo <= sent < hi:
                        out["first"].append(first - sent)
                        out["end"].append(done - sent)
            finally:
                await ws.close()

        async def cpu_in_window() -> float:
            await sleep_until(lo)
            before = self_cpu_seconds()
            await sleep_until(hi)
            return self_cpu_seconds() - before

        cpu = asyncio.create_task(cpu_in_window())
        results = await asyncio.gather(
            *(converse(n) for n in range(active)), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                errors[type(r).__name__] += 1
        out["cpu"] = await cpu
    out["errors"] = dict(errors)
    return out


def _sio_worker(queue: Any, *args: Any) -> None:
    import uvloop

    raise_nofile()
    queue.put(uvloop.run(_sio_chat(*args)))


async def measure_socketio(
    args: argparse.Namespace, workdir: Path, tokens: list[str], label: str
) -> dict[str, Any]:
    env = {"CEILING_TOKENS": orjson.dumps(tokens).decode()}
    argv = [str(BENCH / "socketio_server.py")]
    async with spawn(argv, "/healthz", workdir, env) as server:
        start = time.monotonic() + 2.0  # the client process starts and connects first
        window = (start + args.warmup, start + args.warmup + args.duration)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_sio_worker, args=(queue, server.url, args.active, len(tokens), start, window)
        )
        proc.start()
        await sleep_until(window[0])
        cpu0 = server.cpu()
        await sleep_until(window[1])
        cpu1 = server.cpu()
        result = await asyncio.to_thread(queue.get, True, 120)
        await asyncio.to_thread(proc.join, 10)
    n = max(1, result["completed"])
    return {
        "name": label,
        "rate": result["completed"] / args.duration,
        "first": result["first"],
        "end": result["end"],
        "server_us": (cpu1 - cpu0) / n * 1e6,
        "db_us": 0.0,
        "client_us": result["cpu"] / n * 1e6,
        "errors": result["errors"],
        "stored": None,
    }


async def measure_ours(args: argparse.Namespace, workdir: Path, label: str) -> dict[str, Any]:
    ws_args = ws_chat.parse_args(
        [
            "--idle",
            "0",
            "--active",
            str(args.active),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--no-ceiling",
        ]
    )
    run, _ = await ws_chat.measure_ours(label, ws_chat.ROOT, ws_args, workdir)
    p = run.phase
    return {
        "name": label,
        "rate": p.rate,
        "first": p.first,
        "end": p.end,
        "server_us": run.cpu_per_msg_us,
        "db_us": run.db_cpu_per_msg_us,
        "client_us": run.client_cpu_per_msg_us,
        "errors": {k: v for k, v in run.summary()["errors"].items() if v},
        "stored": run.stored,
    }


async def main_async(args: argparse.Namespace) -> None:
    raise_nofile()
    tokens = reply_tokens()
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    results = []
    for k in range(args.rounds):
        order = ["ours", "socketio"] if k % 2 == 0 else ["socketio", "ours"]
        for target in order:
            label = target if args.rounds == 1 else f"{target} ({k + 1})"
            if target == "ours":
                results.append(await measure_ours(args, workdir, label))
            else:
                results.append(await measure_socketio(args, workdir, tokens, label))
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} · {machine()} · load {load()}")
    print(
        f"{args.active} chatting connections, {len(tokens)} tokens a reply ({len(tokens) + 3} "
        f"frames or emits), warm-up {args.warmup} s, window {args.duration} s\n"
    )
    print(
        "| target | msgs/s | first token p50/p99 ms | end p50/p99 ms | server CPU/msg "
        "| PostgreSQL CPU/msg | client CPU/msg | errors |"
    )
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | --- |")
    for r in results:
        first = " / ".join(f"{percentile(r['first'], q) * 1000:.1f}" for q in (0.5, 0.99))
        end = " / ".join(f"{percentile(r['end'], q) * 1000:.1f}" for q in (0.5, 0.99))
        print(
            f"| {r['name']} | {r['rate']:,.0f} | {first} | {end} | {r['server_us']:,.0f} µs "
            f"| {r['db_us']:,.0f} µs | {r['client_us']:,.0f} µs | {r['errors'] or 0} |"
        )
    print()
    for ours, sio in zip(results[0::2], results[1::2], strict=True):
        if ours["name"].startswith("socketio"):
            ours, sio = sio, ours
        print(
            f"{sio['name']} / {ours['name']}: server CPU per message "
            f"{sio['server_us'] / max(ours['server_us'], 1e-9):.1f}× ours "
            f"({(sio['server_us']) / max(ours['server_us'] + ours['db_us'], 1e-9):.1f}× ours "
            f"with PostgreSQL's); ours {ours['rate'] / max(sio['rate'], 1e-9):.1f}× its msgs/s"
        )
    for r in results:
        if r["stored"] is not None:
            print(f"{r['name']} stored: {r['stored']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--active", type=int, default=100, help="connections that chat")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="both targets this many times")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
