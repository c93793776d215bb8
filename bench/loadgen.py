"""The load generator: client processes on uvloop + aiohttp, driven by one coordinator.

`LoadGen` starts `processes` worker processes and gives each a share of the users'
tokens. On command they open their WebSocket connections at a ramp rate and hold them
(each connection has one reader task, so pings are answered and closes noticed), run
the chat workload on the active ones (send a `message`, wait for its `end`, repeat,
optionally after a think time), or post to REST `/chat` from N loops. Every frame is
checked against the protocol's order (`ack`, `start`, `token`s by `seq` with no gap,
`end` whose text is the tokens joined); anything else counts as an error.

One client process holds at most `PER_PROCESS` connections (its open-file limit, which
it cannot raise beyond the hard limit, less a margin), so `LoadGen` starts as many
processes as the connections need, whatever was asked. One source address reaches one
server port through about 28,000 local ports (`ip_local_port_range`); above
`PER_ADDRESS` connections each process binds its connections to source addresses of its
own in 127.0.0.0/8, in turn (127.0.0.2, .3, …: Linux routes all of 127/8 to loopback).

Times are `time.monotonic()`, which is system-wide on Linux, so the coordinator's
measurement window means the same instants in every process. A phase reports the
latencies of messages sent inside the window and the replies ended inside it, the
client's CPU inside it, and records (user, id, message_id, reply id, text) of every
acked message and ended reply, so the run can be checked against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from yarl import URL

try:
    from bench.harness import percentile, raise_nofile, self_cpu_seconds
    from bench.idle_sockets import IdleSocket, connect_from, upgrade_request
except ImportError:  # run as a script from bench/
    from harness import percentile, raise_nofile, self_cpu_seconds  # type: ignore[no-redef]
    from idle_sockets import (  # type: ignore[no-redef]
        IdleSocket,
        connect_from,
        upgrade_request,
    )

REPLY_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
FD_MARGIN = 1000  # files a client process keeps for itself (pipes, the loop, libraries)
PER_PROCESS = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - FD_MARGIN


def local_ports() -> int:
    """How many local ports one source address has towards one server port."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except OSError:  # not Linux: the IANA range
        low, high = 49152, 65535
    return high - low + 1


ONE_ADDRESS_MAX = local_ports() * 9 // 10


# connect() takes the ports of one parity first (half the range), then searches the rest
# one by one: measured, client processes with 16,700 sockets on one address each stalled
# in connect() from about 14,000 on (84,000 in all) and stopped answering pings. A
# quarter of the range an address keeps that search short.
PER_ADDRESS = ONE_ADDRESS_MAX // 4


def plan(
    connections: int, processes: int, source_addresses: int | None = None
) -> tuple[int, list[tuple[str, ...]]]:
    """How many client processes, and the source addresses each binds its connections to,
    in turn (none: any address).

    `source_addresses` None: automatic, none up to `PER_ADDRESS` connections, else enough
    for `PER_ADDRESS` each and at least one a process; 0: none; N: N addresses, dealt
    out to the processes in turn (shared when fewer than the processes).
    """
    processes = max(1, processes, -(-connections // PER_PROCESS))
    processes = min(processes, max(1, connections))
    if source_addresses is None:
        needed = -(-connections // PER_ADDRESS)
        source_addresses = 0 if needed <= 1 else max(processes, needed)
    if not source_addresses:
        if connections > ONE_ADDRESS_MAX:
            raise ValueError(f"{connections} connections need more than one source address")
        return processes, [()] * processes
    if source_addresses > 250:
        raise ValueError("at most 250 source addresses (127.0.0.2 to 127.0.0.251)")
    per_address = -(-connections // source_addresses)
    if per_address > ONE_ADDRESS_MAX:
        raise ValueError(
            f"{per_address} connections a source address: more than its {ONE_ADDRESS_MAX} ports"
        )
    dealt = range(max(processes, source_addresses))
    return processes, [
        tuple(f"127.0.0.{2 + j % source_addresses}" for j in dealt[i::processes])
        for i in range(processes)
    ]


# -- results ------------------------------------------------------------------------------


@dataclass
class Record:
    """An acked message (and its ended reply, when it ended)."""

    user_id: int
    client_id: str
    message_id: int
    reply_id: int | None = None
    reply_text: str | None = None


@dataclass
class OpenResult:
    held: int
    failed: int
    seconds: float
    errors: Counter[str] = field(default_factory=Counter)  # why the failed ones failed


@dataclass
class PhaseResult:
    """One workload phase, summed over the client processes."""

    window_s: float
    completed: int  # replies ended (or REST answers) inside the window
    ack: list[float] = field(default_factory=list)  # latencies in seconds
    first: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    records: list[Record] = field(default_factory=list)
    client_cpu_s: float = 0.0
    sent: int = 0

    @property
    def rate(self) -> float:
        return self.completed / self.window_s

    def ms(self, which: str, q: float) -> float:
        return percentile(getattr(self, which), q) * 1000

    def trio(self, which: str) -> str:
        """p50 / p95 / p99 of `which` in ms, for a report's table."""
        return " / ".join(f"{self.ms(which, q):.1f}" for q in (0.5, 0.95, 0.99))

    def merge(self, other: dict[str, Any]) -> None:
        self.completed += other["completed"]
        self.ack += other["ack"]
        self.first += other["first"]
        self.end += other["end"]
        self.errors.update(other["errors"])
        self.records += [Record(*r) for r in other["records"]]
        self.client_cpu_s += other["cpu"]
        self.sent += other["sent"]


# -- the worker process -------------------------------------------------------------------


class _Pending:
    __slots__ = ("ack", "done", "end", "first", "id", "mid", "rid", "sent", "seq", "texts")

    def __init__(self, client_id: str, done: asyncio.Future[None]) -> None:
        self.id = client_id
        self.sent = time.monotonic()
        self.ack = self.first = self.end = 0.0
        self.seq = -2  # -2: nothing yet; -1: started; n: last token's seq
        self.texts: list[str] = []
        self.mid = 0
        self.rid = 0
        self.done = done


class _Client:
    """One WebSocket connection of the worker, with its reader task."""

    def __init__(self, worker: _Worker, user_id: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.worker = worker
        self.user_id = user_id
        self.ws = ws
        self.pending: dict[str, _Pending] = {}
        self.echoes: set[str] = set()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        errors = self.worker.errors
        try:
            await self._frames(errors)
        except (aiohttp.ClientError, ConnectionError) as exc:  # reset under our feet
            errors[f"connection lost ({type(exc).__name__})"] += 1
        else:
            if not self.worker.closing:
                errors[f"closed by the server ({self.ws.close_code})"] += 1
        for p in self.pending.values():
            if not p.done.done():
                p.done.set_result(None)

    async def _frames(self, errors: Counter[str]) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            p = self.pending.get(frame.get("id"))  # type: ignore[arg-type]
            if p is None:
                if kind == "message":  # sent from another connection of this user
                    self.echoes.add(frame["id"])
                elif frame.get("id") in self.echoes:
                    if kind == "end":
                        self.echoes.discard(frame["id"])
                elif kind == "error":
                    errors[f"error {frame.get('code')}"] += 1
                elif kind not in ("pong", "ready"):
                    errors[f"unexpected {kind}"] += 1
                continue
            now = time.monotonic()
            if kind == "token":
                if frame["seq"] != p.seq + 1 or p.seq < -1:
                    errors["token out of order"] += 1
                p.seq = frame["seq"]
                p.texts.append(frame["text"])
                if not p.first:
                    p.first = now
            elif kind == "ack":
                if p.seq != -2 or p.ack:
                    errors["ack out of order"] += 1
                p.ack = now
                p.mid = frame["message_id"]
            elif kind == "start":
                if not p.ack or p.seq != -2:
                    errors["start out of order"] += 1
                p.seq = -1
            elif kind == "end":
                p.end = now
                p.rid = frame["message_id"]
                if frame["text"] != "".join(p.texts) or p.seq < -1:
                    errors["end does not match the tokens"] += 1
                if frame["finish_reason"] != "stop":
                    errors[f"finish_reason {frame['finish_reason']}"] += 1
                del self.pending[p.id]
                p.done.set_result(None)
            elif kind == "error":
                errors[f"error {frame.get('code')}"] += 1
                if not p.ack:  # refused: no end follows
                    del self.pending[p.id]
                    p.done.set_result(None)


class _Worker:
    def __init__(
        self,
        ws_url: str,
        users: list[tuple[int, str]],
        active: int,
        prefix: str,
        sources: tuple[str, ...] = (),
    ) -> None:
        self.ws_url = ws_url
        self.sources = sources  # connection n binds to sources[n % len]; none: any
        self.users = users
        self.active = active
        self.prefix = prefix
        self.clients: list[_Client] = []  # the first `active`: aiohttp, every frame checked
        self.idle: list[IdleSocket] = []  # the rest: held, answering pings
        self.errors: Counter[str] = Counter()  # everything seen, holding included
        self.reported: Counter[str] = Counter()  # the part of it a phase has reported
        self.closing = False
        self.phases = 0  # client ids never repeat across phases
        self.session: aiohttp.ClientSession | None = None

    async def open(self, ramp_per_s: float) -> dict[str, Any]:
        local = (self.sources[0], 0) if self.sources else None
        connector = aiohttp.TCPConnector(limit=0, local_addr=local)
        # No total timeout: the session's default (300 s) closes a WebSocket held longer.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        began = time.monotonic()
        why: Counter[str] = Counter()
        url = URL(self.ws_url)
        loop = asyncio.get_running_loop()

        host, port = url.host or "127.0.0.1", url.port or 80

        async def hold(n: int, token: str) -> IdleSocket | None:
            source = self.sources[n % len(self.sources)] if self.sources else None
            request = upgrade_request(f"{host}:{port}", url.path, token)
            try:
                raw = await asyncio.wait_for(connect_from(host, port, source), CONNECT_TIMEOUT_S)
                _, sock = await loop.create_connection(
                    lambda: IdleSocket(self.errors, lambda: self.closing), sock=raw
                )
            except (OSError, TimeoutError) as exc:
                why[f"connect: {type(exc).__name__}: {exc}"[:120]] += 1
                return None
            try:
                sock.transport.write(request)  # type: ignore[union-attr]
                failed = await asyncio.wait_for(asyncio.shield(sock.ready), READY_TIMEOUT_S)
            except TimeoutError:
                failed = f"no ready in {READY_TIMEOUT_S:.0f} s"
            except RuntimeError:  # closed between the connect and the write
                failed = "closed before the handshake"
            if failed is not None:
                why[failed] += 1
                sock.abort()
                return None
            return sock

        async def connect(n: int, user_id: int, token: str) -> _Client | IdleSocket | None:
            await asyncio.sleep(max(0.0, began + n / ramp_per_s - time.monotonic()))
            if n >= self.active:
                return await hold(n, token)
            try:
                ws = await self.session.ws_connect(  # type: ignore[union-attr]
                    self.ws_url,
                    headers={"Authorization": f"Bearer {token}"},
                    decode_text=False,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5),
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                why[f"connect: {type(exc).__name__}: {exc}"[:120]] += 1
                return None
            try:
                msg = await ws.receive(timeout=READY_TIMEOUT_S)
            except TimeoutError:
                msg = None
            if msg is None or msg.type != aiohttp.WSMsgType.TEXT:
                why[f"no ready: {msg and msg.type.name} {ws.close_code}"] += 1
                await ws.close()
                return None
            frame = orjson.loads(msg.data)
            if frame["type"] != "ready":
                why[f"no ready: {frame}"[:120]] += 1
                await ws.close()
                return None
            return _Client(self, user_id, ws)

        results = await asyncio.gather(*(connect(n, u, t) for n, (u, t) in enumerate(self.users)))
        self.clients = [c for c in results if isinstance(c, _Client)]
        self.idle = [c for c in results if isinstance(c, IdleSocket)]
        failed = results.count(None)
        return {
            "held": len(self.clients) + len(self.idle),
            "failed": failed,
            "seconds": time.monotonic() - began,
            "errors": dict(why),
        }

    async def chat(
        self, start: float, window: tuple[float, float], think_s: float, question: str
    ) -> dict[str, Any]:
        before = Counter(self.errors)  # a phase reports its own errors
        self.phases += 1
        out: dict[str, Any] = {"completed": 0, "ack": [], "first": [], "end": [], "sent": 0}
        records: list[tuple[Any, ...]] = []
        lo, hi = window
        loop = asyncio.get_running_loop()
        prefix = f"{self.prefix}-{self.phases}"

        async def converse(n: int, client: _Client) -> None:
            await asyncio.sleep(max(0.0, start - time.monotonic()) + n * 0.0005)
            k = 0
            while time.monotonic() < hi and not client.ws.closed:
                k += 1
                cid = f"{prefix}-{n}-{k}"
                p = _Pending(cid, loop.create_future())
                client.pending[cid] = p
                out["sent"] += 1
                try:
                    await client.ws.send_str(
                        orjson.dumps({"type": "message", "id": cid, "text": question}).decode()
                    )
                except (aiohttp.ClientError, ConnectionError):  # the reader counts the loss
                    client.pending.pop(cid, None)
                    return
                try:
                    await asyncio.wait_for(p.done, REPLY_TIMEOUT_S)
                except TimeoutError:
                    self.errors["reply timed out"] += 1
                    client.pending.pop(cid, None)
                    return
                if p.mid:
                    text = "".join(p.texts) if p.end else None
                    records.append((client.user_id, cid, p.mid, p.rid or None, text))
                if not p.end:
                    if p.ack:
                        self.errors["acked, never ended"] += 1
                    else:
                        self.errors["never acked"] += 1
                    continue
                if lo <= p.end < hi:
                    out["completed"] += 1
                if lo <= p.sent < hi:
                    out["ack"].append(p.ack - p.sent)
                    out["first"].append((p.first or p.end) - p.sent)
                    out["end"].append(p.end - p.sent)
                if think_s:
                    await asyncio.sleep(think_s)

        cpu = asyncio.create_task(self._cpu_in(window))
        await asyncio.gather(*(converse(n, c) for n, c in enumerate(self.clients[: self.active])))
        out["cpu"] = await cpu
        out["errors"] = self._reported(before)
        out["records"] = records
        return out

    async def rest(
        self, url: str, start: float, window: tuple[float, float], loops: int, question: str
    ) -> dict[str, Any]:
        before = Counter(self.errors)
        self.phases += 1
        prefix = f"{self.prefix}-{self.phases}"
        out: dict[str, Any] = {"completed": 0, "ack": [], "first": [], "end": [], "sent": 0}
        records: list[tuple[Any, ...]] = []
        lo, hi = window
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def loop(n: int) -> None:
                user_id, token = self.users[n % len(self.users)]
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                await asyncio.sleep(max(0.0, start - time.monotonic()))
                k = 0
                while time.monotonic() < hi:
                    k += 1
                    cid = f"{prefix}-r{n}-{k}"
                    body = orjson.dumps({"message": question, "id": cid})
                    sent = time.monotonic()
                    out["sent"] += 1
                    try:
                        async with http.post(url, data=body, headers=headers) as resp:
                            data = await resp.read()
                            status = resp.status
                    except (aiohttp.ClientError, OSError) as exc:
                        self.errors[type(exc).__name__] += 1
                        await asyncio.sleep(0.05)
                        continue
                    done = time.monotonic()
                    if status != 200:
                        self.errors[f"HTTP {status}"] += 1
                        continue
                    answer = orjson.loads(data)
                    records.append(
                        (user_id, cid, answer["message_id"], answer["reply_id"], answer["response"])
                    )
                    if lo <= done < hi:
                        out["completed"] += 1
                    if lo <= sent < hi:
                        out["end"].append(done - sent)

            cpu = asyncio.create_task(self._cpu_in(window))
            await asyncio.gather(*(loop(n) for n in range(loops)))
            out["cpu"] = await cpu
        out["errors"] = self._reported(before)
        out["records"] = records
        return out

    def _reported(self, before: Counter[str]) -> dict[str, int]:
        """The errors since `before`, now reported by a phase (close() leaves them out)."""
        mine = self.errors - before
        self.reported.update(mine)
        return dict(mine)

    @staticmethod
    async def _cpu_in(window: tuple[float, float]) -> float:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        before = self_cpu_seconds()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        return self_cpu_seconds() - before

    async def close(self) -> dict[str, Any]:
        self.closing = True
        await asyncio.gather(*(c.ws.close() for c in self.clients), return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.idle), return_exceptions=True)
        await asyncio.gather(*(c.reader for c in self.clients), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        return {"errors": dict(self.errors - self.reported)}  # those no phase reported


def _worker_main(
    pipe: Pipe, ws_url: str, users: list[tuple[int, str]], active: int, sources: tuple[str, ...]
) -> None:
    import uvloop

    raise_nofile()
    uvloop.run(_serve(pipe, _Worker(ws_url, users, active, uuid.uuid4().hex[:10], sources)))


async def _serve(pipe: Pipe, worker: _Worker) -> None:
    while True:
        cmd = await asyncio.to_thread(pipe.recv)
        op = cmd.pop("op")
        if op == "open":
            pipe.send(await worker.open(**cmd))
        elif op == "chat":
            pipe.send(await worker.chat(**cmd))
        elif op == "rest":
            pipe.send(await worker.rest(**cmd))
        elif op == "close":
            pipe.send(await worker.close())
            return


# -- the coordinator ----------------------------------------------------------------------


class LoadGen:
    """Client processes holding `len(users)` connections, `active` of which chat.

    Use as an async context manager; `open()` first, then any number of `chat()` or
    `rest()` phases. `processes` is raised to what the connections need, and
    `source_addresses` (see `plan`) spreads them over addresses of 127.0.0.0/8.
    """

    def __init__(
        self,
        ws_url: str,
        users: Sequence[tuple[int, str]],
        active: int,
        processes: int = 1,
        question: str = "",
        source_addresses: int | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.users = list(users)
        self.active = min(active, len(self.users))
        self.processes, self.sources = plan(len(self.users), processes, source_addresses)
        self.question = question
        self._pipes: list[Pipe] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []

    async def __aenter__(self) -> LoadGen:
        ctx = multiprocessing.get_context("spawn")
        k = self.processes
        for i in range(k):
            mine, theirs = ctx.Pipe()
            share = self.users[i::k]
            active = self.active // k + (1 if i < self.active % k else 0)
            proc = ctx.Process(
                target=_worker_main,
                args=(theirs, self.ws_url, share, active, self.sources[i]),
                daemon=True,
            )
            proc.start()
            self._pipes.append(mine)
            self._procs.append(proc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pipes:
            with contextlib.suppress(TimeoutError, EOFError, BrokenPipeError):
                await asyncio.wait_for(self._all({"op": "close"}), 60)
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()

    async def _all(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        for pipe in self._pipes:
            pipe.send(dict(cmd))
        return list(await asyncio.gather(*(asyncio.to_thread(p.recv) for p in self._pipes)))

    async def open(self, ramp_per_s: float = 500.0) -> OpenResult:
        per = ramp_per_s / self.processes
        results = await self._all({"op": "open", "ramp_per_s": per})
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r["errors"])
        if errors:
            print(f"connections not opened: {dict(errors)}", file=sys.stderr, flush=True)
        return OpenResult(
            sum(r["held"] for r in results),
            sum(r["failed"] for r in results),
            max(r["seconds"] for r in results),
            errors,
        )

    def window(self, warmup_s: float, duration_s: float) -> tuple[float, tuple[float, float]]:
        start = time.monotonic() + 0.3
        return start, (start + warmup_s, start + warmup_s + duration_s)

    async def chat(
        self, start: float, window: tuple[float, float], think_s: float = 0.0
    ) -> PhaseResult:
        """Run the chat workload; call inside `window()`'s instants (see `measure`)."""
        results = await self._all(
            {
                "op": "chat",
                "start": start,
                "window": window,
                "think_s": think_s,
                "question": self.question,
            }
        )
        phase = PhaseResult(window[1] - window[0], 0)
        for r in results:
            phase.merge(r)
        return phase

    async def rest(
        self, url: str, loops: int, start: float, window: tuple[float, float]
    ) -> PhaseResult:
        k = self.processes
        results = await self._all_split(
            [
                {
                    "op": "rest",
                    "url": url,
                    "start": start,
                    "window": window,
                    "loops": loops // k + (1 if i < loops % k else 0),
                    "question": self.question,
                }
                for i in range(k)
            ]
        )
        phase = PhaseResult(window[1] - window[0], 0)
        for r in results:
            phase.merge(r)
        return phase

    async def _all_split(self, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for pipe, cmd in zip(self._pipes, cmds, strict=True):
            pipe.send(cmd)
        return list(await asyncio.gather(*(asyncio.to_thread(p.recv) for p in self._pipes)))

    async def close(self) -> Counter[str]:
        """Close every connection; the errors seen while holding them (unexpected closes)."""
        results = await self._all({"op": "close"})
        self._pipes = []
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r["errors"])
        return errors
