"""Server processes for tests that need more than one instance, or real signals."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson

from tests.accounts import PASSWORD, unique_email
from tests.chat.ws import recv

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
        "SIGNUPS_PER_HOUR_PER_ADDRESS": "0",  # tests sign up many users from 127.0.0.1
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


# -- nginx in front, with deploy/nginx-chat.conf -----------------------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_MAIN_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/chat.conf;
}}
"""


def nginx_config(tmp: Path, port: int, upstreams: list[int]) -> Path:
    """deploy/nginx-chat.conf with this run's ports (two upstreams; one may be given
    twice), inside a minimal main config."""
    site = (ROOT / "deploy" / "nginx-chat.conf").read_text()
    site = site.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    for default, actual in zip((8001, 8002), upstreams, strict=True):
        site, n = re.subn(rf"server 127\.0\.0\.1:{default} ", f"server 127.0.0.1:{actual} ", site)
        assert n == 1, "deploy/nginx-chat.conf no longer has the upstream lines this edits"
    (tmp / "chat.conf").write_text(site)
    main = tmp / "nginx.conf"
    main.write_text(NGINX_MAIN_CONF.format(tmp=tmp))
    return main


@asynccontextmanager
async def nginx_in_front(tmp: Path, upstreams: list[int]) -> AsyncIterator[str]:
    """Debian's nginx with deploy/nginx-chat.conf (own prefix, pid and logs in `tmp`)
    in front of `upstreams`; yields its URL, and fails if nginx exits badly."""
    port = free_port()
    conf = nginx_config(tmp, port, upstreams)
    proc = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, proc, timeout=20, path="/healthz")
        yield url
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        errors = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
        if proc.returncode not in (0, None):
            raise RuntimeError(f"nginx exited with {proc.returncode}: {(stderr + errors)[-500:]}")


# -- Redis ------------------------------------------------------------------------------------

MACHINE_REDIS = ("127.0.0.1", 6379)


def redis_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A `redis-server` of our own on a free port, with nothing saved to disk, which can be
    stopped and started again on the same port (an outage, as the server sees it)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        args = f"--port {self.port} --bind 127.0.0.1 --save '' --appendonly no --daemonize no"
        self.proc = subprocess.Popen(
            ["redis-server", *shlex.split(args)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not redis_answers("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- talking to a server process -------------------------------------------------------

QUESTION = "What settings are there for the purge schedule and retention?"


def message(id: str, text: str = QUESTION) -> str:
    """A `message` frame, as text."""
    return orjson.dumps({"type": "message", "id": id, "text": text}).decode()


async def http_signup(session: aiohttp.ClientSession, url: str, email: str | None = None):
    """A new user on the server at `url`: (access token, user id)."""
    async with session.post(
        url + "/api/v1/auth/signup", json={"email": email or unique_email(), "password": PASSWORD}
    ) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        return body["access_token"], body["id"]


async def ws_to(session: aiohttp.ClientSession, ws_url: str, token: str):
    """A WebSocket to `ws_url`, after its `ready`: (socket, the ready frame)."""
    ws = await session.ws_connect(ws_url, headers={"Authorization": f"Bearer {token}"})
    ready = await recv(ws)
    assert ready["type"] == "ready"
    return ws, ready
