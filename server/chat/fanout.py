"""The chat's side of the fan-out: replies generated here are published, replies
generated elsewhere are mirrored here.

Every instance publishes what happens to the replies it generates (a message
stored, start, tokens, errors, end: `server.fanout.events`) and every other
instance mirrors them, so a user's tabs on any instance see the conversation
live and `resume` works anywhere. `cancel` travels the other way, to the
instance that generates. The transport is a `server.fanout.backend.Backend`.

Who is there. Once a second the transport lists the instances listening. The
rules:

- An instance alone publishes nothing (no round trip, no self-delivery): only
  `Hello` and `Cancel` always go out.
- A listener that (re)connects says `Hello`. Whoever hears a `Hello`, or sees
  a new instance in the list, publishes a `Sync` of the replies it generates
  now (the reply and every token so far), so an instance that appears
  mid-reply, or one whose listener came back after missing events, mirrors
  those replies from their start; later events continue them (mirrors skip
  tokens they already have). What a newcomer cannot get is the `message` echo
  of a message stored in the moment between its `Hello` and the others
  hearing it.
- An instance gone from the list for `GONE_AFTER_S` died (its process is gone
  and the transport dropped its subscription): its mirrored replies end at
  once with `unavailable`, and the text so far is stored as the reply
  (`finish_reason` error), so every `end` is in the history. Mirrors that hear
  nothing for `ORPHAN_AFTER_S` end the same way (a partitioned instance).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from server.db import queries
from server.fanout.backend import Backend, Missed, Received
from server.fanout.events import (
    Cancel,
    ConversationChanged,
    Ended,
    Event,
    Hello,
    MessageStored,
    Started,
    Sync,
    Tokens,
)

if TYPE_CHECKING:
    from server.chat.replies import ReplyManager

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 60.0
PEER_POLL_S = 1.0
GONE_AFTER_S = 5.0
LISTEN_WAIT_S = 10.0


class Outbox:
    """What this instance tells the others. `peers` is who else listens, as last seen:
    while it is empty nothing but `Hello` and `Cancel` is published, and the reply
    manager builds no event at all (the hot path when alone)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.peers: frozenset[str] = frozenset()

    def publish(self, event: Event) -> None:
        if self.peers:
            self.backend.publish(event)

    def cancel(self, user_id: int, client_id: str) -> None:
        """Ask whichever instance generates the reply to stop it (sent even when alone)."""
        self.backend.publish(Cancel(user_id, client_id))


class FanOut:
    """This instance's side of the fan-out: mirrors, the sync to newcomers, the peer watch.

    Everything it does to a reply goes through the `ReplyManager`.
    """

    def __init__(self, backend: Backend, outbox: Outbox, replies: ReplyManager) -> None:
        self.backend = backend
        self.outbox = outbox
        self.instance = backend.instance
        self.replies = replies
        self.listening = backend.listening
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: dict[tuple[int, str], float] = {}
        self._origin: dict[tuple[int, str], str] = {}  # mirror → the instance generating it
        self._absent_since: dict[str, float] = {}
        self._hello_at: dict[str, float] = {}  # when each peer's last hello was heard

    @property
    def peers(self) -> frozenset[str]:
        return self.outbox.peers

    @property
    def sent(self) -> int:
        return self.backend.sent

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        subscribed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._consume(subscribed), name="fanout consume"),
            asyncio.create_task(self._sweep_orphans(), name="fanout sweep"),
            asyncio.create_task(self._watch_peers(), name="fanout peers"),
        ]
        await subscribed.wait()
        await self.backend.start()
        try:
            await asyncio.wait_for(self.listening.wait(), LISTEN_WAIT_S)
        except TimeoutError:
            log.warning("fan-out is not listening yet; it keeps trying")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.close()

    def _sync(self) -> None:
        """Publish the replies generated here, from their start, for a newcomer to mirror."""
        publish = self.outbox.publish
        for reply in self.replies.in_flight():
            publish(Sync(reply.user_id, reply.id, reply.message_id))
            if reply.started:
                publish(
                    Started(reply.user_id, reply.id, reply.message_id, tuple(reply.sources or ()))
                )
                if reply.tokens:
                    publish(Tokens(reply.user_id, reply.id, 0, tuple(reply.tokens)))

    # -- who is there ----------------------------------------------------------------------

    async def _watch_peers(self) -> None:
        while True:
            try:
                await self.poll_peers()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Not knowing who is there: anyone seen next time is new, and gets a sync.
                log.debug("fan-out could not list the instances: %s", exc)
                self.outbox.peers = frozenset()
            await asyncio.sleep(PEER_POLL_S)

    async def poll_peers(self) -> frozenset[str]:
        """List the other instances now; sync to newcomers, end the mirrors of the gone."""
        asked_at = time.monotonic()
        listed = await self.backend.peers()
        # A hello heard while the list was on its way is newer than the list.
        heard = {p for p, at in self._hello_at.items() if at >= asked_at}
        self._hello_at = {p: at for p, at in self._hello_at.items() if at >= asked_at}
        found = (listed | heard) - {self.instance}
        if found - self.outbox.peers:
            self.outbox.peers = self.outbox.peers | found
            self._sync()
        self.outbox.peers = found
        now = time.monotonic()
        for origin in set(self._origin.values()):
            if origin in found:
                self._absent_since.pop(origin, None)
            elif now - self._absent_since.setdefault(origin, now) >= GONE_AFTER_S:
                log.warning("instance %s is gone: its replies end here", origin)
                await self._end_mirrors_of(origin, "the instance generating this reply is gone")
                self._absent_since.pop(origin, None)
        return found

    # -- receiving (mirrors of replies generated elsewhere) --------------------------------

    async def _consume(self, subscribed: asyncio.Event) -> None:
        async with self.backend.subscribe() as deliveries:
            subscribed.set()
            async for delivery in deliveries:
                if isinstance(delivery, Missed):
                    self.outbox.peers = frozenset()  # events were missed: everyone syncs again
                    continue
                try:
                    await self._apply(delivery)
                except Exception:
                    log.exception("fan-out could not apply %r", delivery)

    async def _apply(self, received: Received) -> None:
        event, origin = received.event, received.origin
        if isinstance(event, Hello):
            self.outbox.peers = self.outbox.peers | {origin}
            self._hello_at[origin] = time.monotonic()
            self._sync()
            return
        replies = self.replies
        if isinstance(event, ConversationChanged):
            replies.show_conversation_change(
                event.user_id, event.event, event.conversation_id, event.title
            )
            return
        user_id, client_id = event.user_id, event.client_id
        key = (user_id, client_id)
        if isinstance(event, Cancel):
            replies.stop(user_id, client_id)
            return
        if isinstance(event, MessageStored | Sync):
            mirror = replies.mirror(user_id, client_id, event.message_id)
            if mirror is None:
                return  # generated here
            self._seen[key] = time.monotonic()
            self._origin[key] = origin
            if isinstance(event, MessageStored):
                text = event.text
                if text is None:
                    text = await queries.message_text(replies.store.pool, event.message_id)
                replies.show_mirrored_message(
                    mirror, text or "", event.timestamp, event.conversation_id
                )
            return
        if not replies.advance_mirror(event):
            return  # began before this instance listened; resume reads the stored reply
        if isinstance(event, Ended):
            self._forget(key)
        else:
            self._seen[key] = time.monotonic()

    def _forget(self, key: tuple[int, str]) -> None:
        self.replies.forget(key)
        self._seen.pop(key, None)
        self._origin.pop(key, None)

    async def _end_mirrors_of(self, origin: str, message: str) -> None:
        for key in [k for k, o in self._origin.items() if o == origin]:
            await self._end_mirror(key, message)

    async def _end_mirror(self, key: tuple[int, str], message: str) -> None:
        mirror = self.replies.active.get(key)
        self._forget(key)
        if mirror is not None and not mirror.local:
            await self.replies.end_orphan(mirror, message)

    async def _sweep_orphans(self) -> None:
        """Mirrors silent for long whose instance is not seen either end with an error."""
        while True:
            await asyncio.sleep(ORPHAN_AFTER_S / 4)
            cutoff = time.monotonic() - ORPHAN_AFTER_S
            for key, seen in list(self._seen.items()):
                mirror = self.replies.active.get(key)
                if mirror is None or mirror.local:
                    self._forget(key)
                elif seen < cutoff and self._origin.get(key) not in self.outbox.peers:
                    await self._end_mirror(key, "the instance generating this reply is gone")
