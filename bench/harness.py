"""What every benchmark shares: a throwaway database, server processes, users, /proc readings.

Benchmarks measure the server as users meet it: `python run_server.py` as a real process
(uvloop), on a database of its own created on DATABASE_URL's server and dropped at the
end. Users are inserted straight into `users` with one precomputed bcrypt hash and get
tokens minted with the shared SECRET_KEY, so setting up 10,000 of them takes a second,
not 10,000 bcrypt rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import bcrypt

from server.db import scratch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
KNOWLEDGE = BENCH / "knowledge.json"
# Matches the one entry of bench/knowledge.json: the mock answers with 20 tokens.
QUESTION = "how long is a benchmark reply?"
SECRET = "bench-secret-key-that-is-long-enough-for-every-hmac-0123456789abcdef"
PASSWORD = "correct horse battery"
DEFAULT_ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def admin_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_ADMIN_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GB, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def load() -> str:
    """The machine's load averages (1, 5 and 15 minutes), for the report."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- /proc readings -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def process_tree(pid: int) -> list[int]:
    """`pid` and every process under it: a supervisor's workers (WORKERS > 1) are its
    children, and what the server holds is the sum over them all."""
    tree, todo = [], [pid]
    while todo:
        parent = todo.pop()
        tree.append(parent)
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # it exited meanwhile
            pass
    return tree


def _summed(reading: Callable[[int], float], pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):  # it exited meanwhile
            total += reading(pid)
    return total


def cpu_seconds_of(comm: str, title_has: str | None = None) -> float:
    """CPU time of every process named `comm` on this machine; with `title_has`, only
    those whose command line (a PostgreSQL backend's title) contains it."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != comm:
                    continue
                if title_has is not None:
                    title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    if title_has not in title:
                        continue
                total += cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                pass
    return total


def postgres_cpu_seconds(database: str | None = None) -> float:
    """CPU time of the `postgres` processes (backends come and go). With `database`,
    only the backends serving it: the machine's PostgreSQL is shared, and other
    sessions' work would count otherwise."""
    return cpu_seconds_of("postgres", None if database is None else f" {database} ")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the database -------------------------------------------------------------------------


def bench_database() -> AbstractAsyncContextManager[str]:
    """A throwaway database on DATABASE_URL's server for one benchmark run."""
    return scratch.scratch_database(admin_url(), "chat_bench")


def password_hash(rounds: int = 12) -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds)).decode()


async def insert_users(db_url: str, n: int, hashed: str) -> list[tuple[int, str]]:
    """`n` active users sharing one password hash; returns (id, email) pairs."""
    tag = uuid.uuid4().hex[:8]
    emails = [f"bench-{tag}-{i}@example.com" for i in range(n)]
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "INSERT INTO users (email, hashed_password, is_active)"
            " SELECT e, $2, true FROM unnest($1::text[]) AS e RETURNING id, email",
            emails,
            hashed,
        )
    finally:
        await conn.close()
    return [(r["id"], r["email"]) for r in rows]


def mint_tokens(user_ids: Sequence[int], ttl_s: int = 3600) -> list[str]:
    """Access tokens as the server would issue them (same key and algorithm)."""
    from server.auth.tokens import TokenIssuer

    issuer = TokenIssuer(SECRET, "HS256", ttl_s)
    return [issuer.issue(user_id)[0] for user_id in user_ids]


# -- processes ----------------------------------------------------------------------------


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/chat/ws"

    def cpu(self) -> float:
        """CPU time so far of the server and its workers."""
        return _summed(cpu_seconds, process_tree(self.pid))

    def rss(self) -> int:
        """Resident memory of the server and its workers, summed."""
        return int(_summed(rss_bytes, process_tree(self.pid)))

    def workers(self) -> int:
        """The processes serving: the workers under a supervisor, else this one."""
        return max(1, len(process_tree(self.pid)) - 1)


async def _wait_ready(process: Process, path: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                raise RuntimeError(
                    f"process exited with {process.proc.returncode}:\n"
                    + process.log.read_text(errors="replace")[-4000:]
                )
            try:
                async with session.get(process.url + path) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{process.url} not ready in {limit_s} s")


def _popen(
    argv: list[str], workdir: Path, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=workdir,
            env={**os.environ, "HOST": "127.0.0.1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
        )


@asynccontextmanager
async def spawn(
    argv: list[str], ready_path: str, workdir: Path, env: dict[str, str], port: int | None = None
) -> AsyncIterator[Process]:
    """Run `argv` (its port in env PORT), wait for `ready_path` to answer 200, stop it after."""
    port = port or free_port()
    log = workdir / f"{Path(argv[-1]).stem}-{port}.log"
    proc = await asyncio.to_thread(_popen, argv, workdir, log, {**env, "PORT": str(port)})
    process = Process(proc, port, log)
    try:
        await _wait_ready(process, ready_path)
        yield process
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
            except TimeoutError:
                proc.kill()
                proc.wait()


def profile(server: Process, out: str, duration_s: float) -> subprocess.Popen[bytes]:
    """py-spy on `server` for `duration_s`: a flame graph for `.svg`, else collapsed stacks."""
    fmt = "flamegraph" if out.endswith(".svg") else "raw"
    spy = Path(sys.executable).with_name("py-spy")
    argv = [
        str(spy) if spy.exists() else "py-spy",
        "record",
        "-p",
        str(server.pid),
        "-d",
        str(int(duration_s)),
        "-r",
        "200",
    ]
    return subprocess.Popen(
        [*argv, "-o", out, "-f", fmt, "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def server_env(db_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": db_url,
        "SECRET_KEY": SECRET,
        "LLM_TOKEN_DELAY_MS": "0",
        "KNOWLEDGE_PATH": str(KNOWLEDGE),
        "CHAT_RATE_PER_MINUTE": "0",
        "MAX_CONNECTIONS_PER_USER": "20",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_MAX": "10",
        "PURGE_CRON": "0 0 1 1 *",
        # The semantic stage of retrieval is measured by its own benchmark (issue 17);
        # these measure the server.
        "SEMANTIC_RETRIEVAL": "0",
    }
    env.update(overrides)
    return env


@asynccontextmanager
async def chat_server(
    db_url: str, workdir: Path, root: Path = ROOT, **env: str
) -> AsyncIterator[Process]:
    """`python run_server.py` on a free port with the bench settings.

    `root`: the checkout whose server runs (another worktree, for an A/B in one run);
    Python puts the script's folder first on the path, so its `server` package is used.
    """
    argv = [str(root / "run_server.py")]
    async with spawn(argv, "/readyz", workdir, server_env(db_url, **env)) as process:
        yield process


@asynccontextmanager
async def ceiling_server(
    workdir: Path, tokens: Sequence[str], writes: str = "frame"
) -> AsyncIterator[Process]:
    """The bare aiohttp server (bench/ceiling.py) answering with `tokens`; `writes`:
    "frame" (a `send_frame` each) or "reply" (a reply's frames in one write)."""
    import orjson

    env = {"CEILING_TOKENS": orjson.dumps(list(tokens)).decode(), "CEILING_WRITES": writes}
    async with spawn([str(BENCH / "ceiling.py")], "/healthz", workdir, env) as process:
        yield process


def reply_tokens(question: str = QUESTION) -> list[str]:
    """The tokens the mock answers `question` with, from the bench knowledge file."""
    from server.answers.knowledge import load_documents
    from server.answers.llm.mock import MockLLM, answer_text, split_tokens
    from server.answers.pipeline import AnswerPipeline

    pipeline = AnswerPipeline.from_documents(load_documents(KNOWLEDGE), MockLLM())
    return split_tokens(answer_text(question, pipeline.retrieve(question)))


async def write_json(path: str, figures: Sequence[Any]) -> None:
    """A run's figures, indented, for `--json`."""
    import orjson

    data = orjson.dumps(list(figures), option=orjson.OPT_INDENT_2)
    await asyncio.to_thread(Path(path).write_bytes, data)


async def sleep_until(instant: float) -> None:
    await asyncio.sleep(max(0.0, instant - time.monotonic()))


async def verify_stored(db_url: str, records: Sequence[Any]) -> dict[str, int]:
    """Check PostgreSQL against what the clients saw (`loadgen.Record`s).

    Every acked message must be stored exactly once, as the `message_id` its `ack`
    named; every ended reply exactly once, as the `end`'s `message_id`, linked to its
    message and with the text streamed. Rows the clients never heard of count too.
    """
    conn = await asyncpg.connect(db_url)
    try:
        users = sorted({r.user_id for r in records})
        messages = await conn.fetch(
            "SELECT m.user_id, m.client_id, m.id FROM chat_history m"
            " JOIN unnest($1::bigint[], $2::text[]) AS t(u, c)"
            " ON m.user_id = t.u AND m.client_id = t.c",
            [r.user_id for r in records],
            [r.client_id for r in records],
        )
        replies = await conn.fetch(
            "SELECT reply_to, id, message FROM chat_history WHERE reply_to = ANY($1::bigint[])",
            [r.message_id for r in records],
        )
        user_rows = await conn.fetchval(
            "SELECT count(*) FROM chat_history WHERE user_id = ANY($1::bigint[])"
            " AND is_user_message",
            users,
        )
    finally:
        await conn.close()
    stored_msgs: dict[tuple[int, str], list[int]] = {}
    for row in messages:
        stored_msgs.setdefault((row["user_id"], row["client_id"]), []).append(row["id"])
    stored_replies: dict[int, list[tuple[int, str]]] = {}
    for row in replies:
        stored_replies.setdefault(row["reply_to"], []).append((row["id"], row["message"]))
    out = {"acked": len(records), "ended": 0, "lost": 0, "duplicated": 0, "wrong": 0}
    for r in records:
        ids = stored_msgs.get((r.user_id, r.client_id), [])
        if not ids:
            out["lost"] += 1
        elif len(ids) > 1:
            out["duplicated"] += 1
        elif ids[0] != r.message_id:
            out["wrong"] += 1
        if r.reply_id is None:
            continue
        out["ended"] += 1
        rows = stored_replies.get(r.message_id, [])
        if not rows:
            out["lost"] += 1
        elif len(rows) > 1:
            out["duplicated"] += 1
        elif rows[0] != (r.reply_id, r.reply_text):
            out["wrong"] += 1
    out["unheard"] = user_rows - len(records)  # stored user messages no client got an ack for
    return out
