"""What the chat needs of a fan-out transport: publish, subscribe, who else listens.

A transport carries `server.fanout.events` between the instances that share a
database: PostgreSQL LISTEN/NOTIFY (`server.fanout.postgres`) is one; another
(Redis, say) implements the same `Backend` and nothing else changes. A
transport never delivers an instance's own events back to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from server.fanout.events import Event


@dataclass(frozen=True, slots=True)
class Received:
    """An event published by instance `origin`."""

    origin: str
    event: Event


@dataclass(frozen=True, slots=True)
class Missed:
    """The transport lost its subscription for a while: events may have been missed.
    (It says `Hello` again once it is back, so the others sync their replies to it.)"""


Delivery = Received | Missed


class Backend(Protocol):
    """A fan-out transport. `start` before use, `close` at the end."""

    #: This instance's id, unique among the instances listening.
    instance: str
    #: Set while the subscription is live.
    listening: asyncio.Event
    #: Payloads published so far (tests and the scaling note read it).
    sent: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(self, event: Event) -> None:
        """Send `event` to the other instances; never blocks (events are batched)."""

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        """The other instances' events, in order, from now on, and `Missed` markers."""
        ...

    async def peers(self) -> frozenset[str]:
        """The ids of the other instances listening now."""
        ...
