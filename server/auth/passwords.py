"""bcrypt hashing, always off the event loop (it costs ~250 ms at 12 rounds)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores everything past 72 bytes
# The nice value of the bcrypt threads: the event loop, PostgreSQL and the sockets come first.
HASHING_NICE = 19


def password_problem(password: str) -> str | None:
    """Why `password` is unacceptable, or None."""
    if "\x00" in password:
        return "password must not contain a NUL character"
    size = len(password.encode())
    if size < MIN_PASSWORD_BYTES:
        return f"password must be at least {MIN_PASSWORD_BYTES} bytes"
    if size > MAX_PASSWORD_BYTES:
        return f"password must be at most {MAX_PASSWORD_BYTES} UTF-8 bytes"
    return None


def lower_thread_priority() -> None:
    """Give the calling thread the lowest CPU priority: nice 19 (Linux nices threads one
    by one) and SCHED_IDLE where there is one (it runs only on CPU time that nothing
    else wants, and a thread that wakes up takes its core at once)."""
    with contextlib.suppress(AttributeError, OSError):  # no per-thread nice here
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICE)
    with contextlib.suppress(AttributeError, OSError):  # no SCHED_IDLE here
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class PasswordHasher:
    """Hashes and checks passwords in threads of its own, at the lowest CPU priority.

    bcrypt releases the GIL, so in the default executor a burst of logins would take
    every core from the event loop and PostgreSQL, and chat would stall behind it. In
    `threads` threads (default: at most 2) at nice 19 logins only get the CPU that chat
    leaves: they slow down under load, chat does not. `close()` stops the threads.

    `dummy_hash` is checked when the email is unknown, so a login for a missing
    account takes as long as one with a wrong password.
    """

    def __init__(self, rounds: int = 12, threads: int | None = None) -> None:
        self.rounds = rounds
        self.dummy_hash = bcrypt.hashpw(b"not a real password", bcrypt.gensalt(rounds)).decode()
        self._executor = ThreadPoolExecutor(
            max_workers=threads or min(2, os.cpu_count() or 1),
            thread_name_prefix="bcrypt",
            initializer=lower_thread_priority,
        )

    def close(self) -> None:
        """Stop the threads; hashes still queued are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self.rounds)
        hashed = await loop.run_in_executor(self._executor, bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True if `password` matches; with `hashed` None, spend the same time and say no."""
        loop = asyncio.get_running_loop()
        check = functools.partial(
            bcrypt.checkpw, password.encode(), (hashed or self.dummy_hash).encode()
        )
        try:
            matched = await loop.run_in_executor(self._executor, check)
        except ValueError:  # a malformed stored hash
            return False
        return matched and hashed is not None
