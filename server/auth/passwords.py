"""bcrypt hashing, always off the event loop (it costs ~250 ms at 12 rounds)."""

from __future__ import annotations

import asyncio
import functools

import bcrypt

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores everything past 72 bytes


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


class PasswordHasher:
    """Hashes and checks passwords in the default executor.

    `dummy_hash` is checked when the email is unknown, so a login for a missing
    account takes as long as one with a wrong password.
    """

    def __init__(self, rounds: int = 12) -> None:
        self.rounds = rounds
        self.dummy_hash = bcrypt.hashpw(b"not a real password", bcrypt.gensalt(rounds)).decode()

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self.rounds)
        hashed = await loop.run_in_executor(None, bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True if `password` matches; with `hashed` None, spend the same time and say no."""
        loop = asyncio.get_running_loop()
        check = functools.partial(
            bcrypt.checkpw, password.encode(), (hashed or self.dummy_hash).encode()
        )
        try:
            matched = await loop.run_in_executor(None, check)
        except ValueError:  # a malformed stored hash
            return False
        return matched and hashed is not None
