"""The client's address, as rate limits key on it.

Behind proxies, `X-Forwarded-For` is a list that each proxy appends to: the client
writes whatever it likes on the left, and only the entries our own proxies added,
on the right, can be believed. With `TRUSTED_PROXIES=N` the address is the N-th
entry from the right (the one the outermost of our N proxies appended); with 0
the header is ignored and the peer's address is used.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from server import keys


def forwarded_address(peer: str | None, forwarded_for: Sequence[str], hops: int) -> str:
    """The client's address given the peer, every X-Forwarded-For value and `hops` (pure)."""
    if hops > 0:
        entries = [e.strip() for value in forwarded_for for e in value.split(",")]
        entries = [e for e in entries if e]
        if len(entries) >= hops:
            return entries[-hops]
    # No header, or fewer entries than our proxies: it did not come through them all.
    return peer or "unknown"


def client_address(request: web.Request) -> str:
    hops = request.app[keys.SETTINGS].forwarded_hops
    return forwarded_address(request.remote, request.headers.getall("X-Forwarded-For", []), hops)
