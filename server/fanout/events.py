"""The events server instances send each other through the fan-out, sans I/O.

An instance publishes what happens to the replies it generates; the others
mirror those replies for their own connections (see `server.chat.fanout`).
Every event is a frozen dataclass; `encode` and `decode` turn one into a
payload and back, and `fit` cuts an event into payloads under a transport's
size limit. A payload is the publishing instance's id, `|`, and the event as a
JSON object whose `kind` names it:

    3f2a9c01b7de|{"kind":"tokens","user_id":7,"client_id":"m1","seq":4,"tokens":["lo"," wor"]}

Nothing here does I/O: a transport (`server.fanout.postgres`) carries the
payloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, ClassVar

import orjson

from protocol import ConversationChange, ErrorCode, FinishReason

__all__ = [
    "Cancel",
    "ConversationChanged",
    "Ended",
    "Event",
    "EventError",
    "Failed",
    "Hello",
    "MessageStored",
    "Started",
    "Sync",
    "Tokens",
    "decode",
    "encode",
    "fit",
]


class EventError(ValueError):
    """A payload that is not an event of this version (it is logged and dropped)."""


@dataclass(frozen=True, slots=True)
class Hello:
    """An instance's listener (re)connected: the others sync their replies to it."""

    kind: ClassVar[str] = "hello"


@dataclass(frozen=True, slots=True)
class MessageStored:
    """A user message was stored and its reply begins here. `text` is None when it
    was too long for one payload: the receiver reads it from row `message_id`."""

    user_id: int
    client_id: str
    message_id: int
    timestamp: str
    text: str | None
    conversation_id: int | None = None  # absent from instances older than conversations
    kind: ClassVar[str] = "message_stored"


@dataclass(frozen=True, slots=True)
class Sync:
    """A reply in flight here, announced to a newcomer; its `Started` and `Tokens` follow."""

    user_id: int
    client_id: str
    message_id: int
    kind: ClassVar[str] = "sync"


@dataclass(frozen=True, slots=True)
class Started:
    """The reply's `start`: its sources, `{"id","topic","score"}` each."""

    user_id: int
    client_id: str
    message_id: int
    sources: tuple[Mapping[str, Any], ...]
    kind: ClassVar[str] = "started"


@dataclass(frozen=True, slots=True)
class Tokens:
    """Consecutive tokens of a reply, the first one numbered `seq`."""

    user_id: int
    client_id: str
    seq: int
    tokens: tuple[str, ...]
    kind: ClassVar[str] = "tokens"


@dataclass(frozen=True, slots=True)
class Failed:
    """The reply failed (its `error` frame); its `Ended` follows."""

    user_id: int
    client_id: str
    code: ErrorCode
    message: str
    kind: ClassVar[str] = "failed"


@dataclass(frozen=True, slots=True)
class Ended:
    """The reply ended, stored as row `reply_id` (None: it could not be stored)."""

    user_id: int
    client_id: str
    reply_id: int | None
    finish_reason: FinishReason
    kind: ClassVar[str] = "ended"


@dataclass(frozen=True, slots=True)
class Cancel:
    """A user asked to stop the reply; the instance generating it does."""

    user_id: int
    client_id: str
    kind: ClassVar[str] = "cancel"


@dataclass(frozen=True, slots=True)
class ConversationChanged:
    """A user's conversation was created, renamed or deleted: the user's connections on
    every instance get the `conversation` frame."""

    user_id: int
    event: ConversationChange
    conversation_id: int
    title: str | None
    kind: ClassVar[str] = "conversation"


Event = (
    Hello | MessageStored | Sync | Started | Tokens | Failed | Ended | Cancel | ConversationChanged
)

_KINDS: dict[str, type[Any]] = {
    cls.kind: cls
    for cls in (
        Hello,
        MessageStored,
        Sync,
        Started,
        Tokens,
        Failed,
        Ended,
        Cancel,
        ConversationChanged,
    )
}
# Fields kept as a tuple in the event and sent as a JSON array.
_TUPLES = frozenset({"sources", "tokens"})


def encode(origin: str, event: Event) -> str:
    """The payload of `event` published by instance `origin` (which has no `|`)."""
    body: dict[str, Any] = {"kind": event.kind}
    for f in fields(event):
        body[f.name] = getattr(event, f.name)
    return origin + "|" + orjson.dumps(body).decode()


def decode(payload: str) -> tuple[str, Event]:
    """(the publishing instance, the event) of a payload.

    Raises:
        EventError: the payload is not an event (malformed, an unknown kind, a
            missing field, an unknown error code or finish reason).
    """
    origin, bar, text = payload.partition("|")
    if not bar:
        raise EventError("no instance id")
    try:
        body = orjson.loads(text)
        cls = _KINDS[body.pop("kind")]
        # A field with a default may be absent (an instance of an earlier version).
        values = {
            f.name: body[f.name] if f.default is MISSING else body.get(f.name, f.default)
            for f in fields(cls)
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EventError(f"malformed event: {exc!r}") from None
    for name in _TUPLES & values.keys():
        if not isinstance(values[name], list):
            raise EventError(f"{name}: not a list")
        values[name] = tuple(values[name])
    try:
        if "code" in values:
            values["code"] = ErrorCode(values["code"])
        if "finish_reason" in values:
            values["finish_reason"] = FinishReason(values["finish_reason"])
        if "event" in values:
            values["event"] = ConversationChange(values["event"])
    except ValueError as exc:
        raise EventError(str(exc)) from None
    return origin, cls(**values)


def fit(origin: str, event: Event, limit: int) -> list[str]:
    """`event` as payloads of at most `limit` UTF-8 bytes each.

    A message's text too long goes as None (the row has it); a run of tokens too
    long is cut in two, again and again. Anything else too long gives no payload.
    """
    payload = encode(origin, event)
    if len(payload.encode()) <= limit:
        return [payload]
    if isinstance(event, MessageStored) and event.text is not None:
        return fit(origin, replace(event, text=None), limit)
    if isinstance(event, Tokens) and len(event.tokens) > 1:
        half = len(event.tokens) // 2
        first = replace(event, tokens=event.tokens[:half])
        second = replace(event, tokens=event.tokens[half:], seq=event.seq + half)
        return fit(origin, first, limit) + fit(origin, second, limit)
    return []
