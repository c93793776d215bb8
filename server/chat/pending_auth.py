"""A bound on WebSockets that are open but not yet authenticated.

A browser authenticates with its first frame, within WS_AUTH_TIMEOUT_S; until then
the socket costs memory and a file descriptor and proves nothing. Each instance
admits at most WS_PENDING_AUTH_PER_ADDRESS such sockets per client address and
WS_PENDING_AUTH_MAX in all (0: no bound); the next handshake is refused with 429
and Retry-After, before the upgrade. A socket leaves the count when its `auth`
frame is read (good or bad), or it times out or closes.
"""

from __future__ import annotations

from collections import Counter


class PendingAuth:
    """Counts of sockets waiting for `auth`, per address and in all (one instance's)."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self._by_address: Counter[str] = Counter()
        self._count = 0

    def admit(self, address: str) -> bool:
        """Count a new socket from `address` in, unless a bound is reached (then False)."""
        if self.total and self._count >= self.total:
            return False
        if self.per_address and self._by_address[address] >= self.per_address:
            return False
        self._by_address[address] += 1
        self._count += 1
        return True

    def release(self, address: str) -> None:
        self._count -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def __len__(self) -> int:
        return self._count
