"""Start the chat server, or run one of its commands.

    python run_server.py            serve on HOST:PORT (default 127.0.0.1:8000)
    WORKERS=4 python run_server.py  the same, served by 4 worker processes
    python run_server.py purge      delete history older than HISTORY_RETENTION_DAYS once

Settings come from the environment and from `.env` in the working directory.
A bad setting stops start-up with one line naming it.

On SIGTERM or SIGINT the server keeps its port open while the replies in flight
finish (for up to SHUTDOWN_TIMEOUT_S), answering `/readyz` with 503 and refusing
new WebSockets from the first moment; then it closes the port and exits. A
second signal stops it at once (exit status 1).

With WORKERS above 1 this process only supervises: it starts the embedded
PostgreSQL (when there is no DATABASE_URL) and the secret key once, then runs
WORKERS copies of itself that each listen on HOST:PORT with SO_REUSEPORT, so
the kernel spreads new connections over them, and one more copy, the shared
writer, that group-commits the chat rows of every worker
(`server/chat/store_writer.py`; GROUP_COMMIT_SHARED=false leaves it out, and
each worker commits its own, as instances on several machines do). Otherwise the
workers share nothing but PostgreSQL. SIGTERM or SIGINT is passed on to every
worker, and the supervisor waits for their graceful shutdown, then stops the
writer; a worker or writer that dies otherwise is started again.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dotenv import load_dotenv

from server.settings import Settings, SettingsError

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("run_server")

RESTART_DELAY_S = 1.0
WRITER_GRACE_S = 15.0  # for the writer's last batches, once the workers are gone
# Connections the kernel queues until the worker accepts them (aiohttp's default is 128;
# the kernel caps it at net.core.somaxconn). When workers fall behind for a moment, more
# than 128 new connections overflow the queue, their SYNs are dropped and each connect
# waits 1, 3, 7 … s to try again (measured opening 100,000 at 1,000/s on 2 shared cores:
# 32,000 ListenOverflows, 39,000 connects timed out after 30 s).
LISTEN_BACKLOG = 4096
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode
BAD_SETTING = 2  # the exit status for a bad setting: a supervisor must not restart it


def _settings() -> Settings:
    load_dotenv(".env", override=False)
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(BAD_SETTING) from None


def _logging(settings: Settings) -> None:
    from server import logs

    logs.configure(settings.log_level, settings.log_format)


def serve(settings: Settings, reuse_port: bool = False) -> None:
    from server.app import create_app
    from server.db.pool import DatabaseUnreachable

    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        uvloop = None
    app = create_app(settings)
    app.on_startup.append(_tune_gc)  # after every cleanup context has started
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
            runner.run(_serve(app, settings, reuse_port))
    except SettingsError as exc:  # found while starting: the knowledge file …
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(BAD_SETTING) from None
    except DatabaseUnreachable as exc:
        print(f"error: DATABASE_URL: {exc}", file=sys.stderr)
        raise SystemExit(BAD_SETTING) from None
    except OSError as exc:  # the port is taken, the host is not ours …
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except asyncio.CancelledError:  # a second signal cut the shutdown short
        raise SystemExit(1) from None


async def _serve(app: web.Application, settings: Settings, reuse_port: bool) -> None:
    """Serve until SIGTERM or SIGINT, then shut down while still listening.

    The port keeps accepting connections while the replies in flight finish (for up to
    SHUTDOWN_TIMEOUT_S, then they are stopped and stored); `/readyz` answers 503 and new
    WebSockets are refused from the first moment, so a load balancer polling `/readyz`
    sees the instance go. Then the listener closes, the WebSockets get 1001 and the
    resources close, as aiohttp's shutdown does. A second signal cuts all this short.
    """
    from aiohttp import web

    from server.app import begin_shutdown

    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=75.0,
        shutdown_timeout=settings.shutdown_timeout_s + 5,
    )
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not stop.is_set():
            log.info("%s: shutting down", name)
            stop.set()
        else:
            log.warning("%s again: stopping at once", name)
            main.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await runner.setup()  # start-up: a signal now is seen once it is over
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, reuse_port=reuse_port, backlog=LISTEN_BACKLOG
        )
        await site.start()
        if not reuse_port:
            print(f"======== Running on {site.name} ========\n(Press CTRL+C to quit)")
        await stop.wait()
    finally:
        if not main.cancelling():  # the second signal leaves the rest undone
            await begin_shutdown(app)
            await runner.cleanup()


# A young collection every 10,000 new containers instead of 700: the chat makes (and drops)
# tens of them per message, and every 10th young collection scans the middle generation.
GC_THRESHOLDS = (10_000, 10, 10)


async def _tune_gc(_app: object) -> None:
    """Keep what start-up built (modules, the app, the knowledge index) out of every
    collection from now on, and collect less often: full collections stall the loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve_writer(settings: Settings) -> None:
    """The shared writer of a supervisor's workers (`server.chat.store_writer`)."""
    import uvloop

    from server.chat.store_writer import run_writer

    assert settings.chat_writer_socket is not None
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_writer(settings, settings.chat_writer_socket))


class Supervisor:
    """Runs `count` worker processes of this script (and its shared writer, when
    `writer`) and passes signals on to them."""

    def __init__(self, count: int, env: dict[str, str], grace_s: float, writer: bool) -> None:
        self.count = count
        self.env = env
        self.grace_s = grace_s
        self.workers: list[subprocess.Popen[bytes]] = []
        self.writer: subprocess.Popen[bytes] | None = None
        self.with_writer = writer
        self.stopping: int | None = None  # the signal that asked us to stop
        self.bad_setting = False

    def _spawn(self, role: str = "--worker") -> subprocess.Popen[bytes]:
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which
        # passes it on once (a second SIGINT would cut a worker's graceful shutdown).
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", role],
            env=self.env,
            start_new_session=True,
        )
        log.info("%s %d started", role.strip("-"), proc.pid)
        return proc

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping is None:
            self.stopping = signum
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def _forget_metrics(self, pid: int) -> None:
        """A dead worker's live gauges (open connections) no longer count."""
        path = self.env.get(MULTIPROC_ENV)
        if path:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, path)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if self.with_writer:
            self.writer = self._spawn("--writer")
        self.workers = [self._spawn() for _ in range(self.count)]
        while self.stopping is None:
            time.sleep(0.2)
            if self.writer is not None:
                # Meanwhile each worker stores its rows itself (server/chat/store_link.py).
                self.writer = self._restarted(self.writer, "--writer")
            self.workers = [self._restarted(proc) for proc in self.workers]
        deadline = time.monotonic() + self.grace_s
        for proc in self.workers:
            self._wait(proc, deadline, "worker")
        # After the workers: they store their last replies through it as they stop.
        if self.writer is not None and self.writer.poll() is None:
            self.writer.send_signal(signal.SIGTERM)
            self._wait(self.writer, time.monotonic() + WRITER_GRACE_S, "writer")
        if self.bad_setting:
            return BAD_SETTING
        failed = [p.returncode for p in self.workers if p.returncode not in (0, -signal.SIGTERM)]
        return 1 if failed else 0

    def _restarted(
        self, proc: subprocess.Popen[bytes], role: str = "--worker"
    ) -> subprocess.Popen[bytes]:
        """`proc`, or a new process in its place when it died; one that found a bad
        setting stops them all instead."""
        if self.stopping is not None or proc.poll() is None:
            return proc
        name = role.strip("-")
        if proc.returncode == BAD_SETTING:
            log.error("%s %d found a bad setting; stopping", name, proc.pid)
            self._on_signal(signal.SIGTERM, None)
            self.bad_setting = True
            return proc
        log.error("%s %d exited with %s; restarting", name, proc.pid, proc.returncode)
        self._forget_metrics(proc.pid)
        time.sleep(RESTART_DELAY_S)
        return proc if self.stopping is not None else self._spawn(role)

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], deadline: float, name: str) -> None:
        """Wait for `proc` to exit until `deadline`, then kill it."""
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s %d did not stop in time; killing it", name, proc.pid)
            proc.kill()
            proc.wait()


def serve_workers(settings: Settings) -> None:
    """WORKERS > 1: shared set-up once, then one process per worker on the same port."""
    if settings.port == 0:
        print("error: WORKERS above 1 needs a fixed PORT (not 0)", file=sys.stderr)
        raise SystemExit(2)
    env = dict(os.environ)
    with ExitStack() as stack:
        if settings.database_url is None:  # stopped once every worker has exited
            from server.db.pool import embedded_postgres

            env["DATABASE_URL"] = stack.enter_context(embedded_postgres(settings.var_dir))
            log.info("using the embedded PostgreSQL in %s", settings.var_dir / "pgdata")
        env["SECRET_KEY"] = settings.with_secret().secret_key
        env.setdefault(MULTIPROC_ENV, str(_metrics_dir(settings)))
        if settings.group_commit_shared:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="chat-writer-"))
            env["CHAT_WRITER_SOCKET"] = os.path.join(folder, "writer.sock")
        log.info("serving on %s:%d with %d workers", settings.host, settings.port, settings.workers)
        supervisor = Supervisor(
            settings.workers, env, settings.shutdown_timeout_s + 15, settings.group_commit_shared
        )
        status = supervisor.run()
    raise SystemExit(status)


def _metrics_dir(settings: Settings) -> Path:
    """An empty folder for the workers' metrics (prometheus-client's multiprocess mode):
    one scrape on any worker then covers them all."""
    path = (settings.var_dir / "metrics").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def purge(settings: Settings) -> None:
    from server.jobs.cli import purge_from_cli

    raise SystemExit(asyncio.run(purge_from_cli(settings)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Real-time AI chat server")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "purge"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = _settings()
    _logging(settings)
    if args.command == "purge":
        purge(settings)
    elif args.writer:
        serve_writer(settings)
    elif args.worker:
        serve(settings, reuse_port=True)
    elif settings.workers > 1:
        serve_workers(settings)
    else:
        serve(settings)


if __name__ == "__main__":
    main()
