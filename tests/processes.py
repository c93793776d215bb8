"""Server processes for tests that need more than one instance, or real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/api/v1/chat/ws"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` (None: none, it was sent already) and wait for the exit code."""
        if self.proc.poll() is None and sig is not None:
            self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


async def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 60,
    path: str = "/readyz",
) -> None:
    """Poll `url + path` until it answers 200 (failing at once if `proc` exits)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with session.get(url + path) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready in {timeout} s")


@asynccontextmanager
async def server_process(
    tmp_path: Path, database_url: str, secret: str, port: int | None = None, **env: str
) -> AsyncIterator[ServerProcess]:
    """`python run_server.py` on a free port, stopped with SIGTERM afterwards."""
    port = port or free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": secret,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "BCRYPT_ROUNDS": "4",
        "LLM_TOKEN_DELAY_MS": "0",
        "VAR_DIR": str(tmp_path / "var"),
        **env,
    }
    # An empty DATABASE_URL or SECRET_KEY means: leave it unset (embedded mode).
    for name in ("DATABASE_URL", "SECRET_KEY"):
        if not full_env[name]:
            del full_env[name]
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run_server.py")],
            cwd=tmp_path,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, port, log)
    try:
        await wait_ready(server.url, proc)
        yield server
    except BaseException:
        print(server.output())
        raise
    finally:
        await server.stop()
