"""The frames between a worker and the shared writer (`server.chat.store_writer`): sans-I/O.

With WORKERS above 1 every worker hands its chat rows to one writer process, so that one
group commit carries every worker's messages (`server.chat.store_link`). A frame is a
4-byte big-endian length and an orjson array. Requests: `[id, "m", user, client id, text,
conversation]` (a message), `[id, "r", user, reply_to, reply...]` (a reply to a stored
message), `[id, "x", user, client id, text, conversation, reply...]` (a message with its
reply generated already), where `reply...` is text, finish reason, sources, token lengths.
Answers: `[id, 0, result...]` or `[id, 1, error, retry_after]`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from server.chat.store import (
    IdConflict,
    RateLimited,
    ReplyRow,
    StoredMessage,
    StoredReply,
    UnknownConversation,
)

HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # a reply's text and its sources, with room to spare

MESSAGE, REPLY, EXCHANGE = "m", "r", "x"
OK, FAILED = 0, 1


class WireError(ValueError):
    """A frame that is not one of ours: the link is dropped."""


class StoreFailed(Exception):
    """The writer could not store the row (its database failed): nothing is stored."""


def frame(payload: list[Any]) -> bytes:
    body = orjson.dumps(payload)
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Splits a byte stream into the arrays of its frames."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list[Any]]:
        """The frames `data` completes, in order; raise WireError for a bad one."""
        self._buffer += data
        frames: list[list[Any]] = []
        start = 0
        while len(self._buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer, start)
            if size > MAX_FRAME:
                raise WireError(f"a frame of {size} bytes")
            end = start + HEADER.size + size
            if end > len(self._buffer):
                break
            try:
                payload = orjson.loads(memoryview(self._buffer)[start + HEADER.size : end])
            except orjson.JSONDecodeError as exc:
                raise WireError(str(exc)) from None
            if not isinstance(payload, list) or len(payload) < 2:
                raise WireError("a frame is an array of at least two items")
            frames.append(payload)
            start = end
        del self._buffer[:start]
        return frames


# -- requests --------------------------------------------------------------------------------


def _row(row: ReplyRow) -> list[Any]:
    return [row.text, row.finish_reason, row.sources, row.token_lengths]


def message_request(
    rid: int,
    user_id: int,
    client_id: str,
    text: str,
    conversation_id: int | None,
    row: ReplyRow | None = None,
) -> bytes:
    if row is None:
        return frame([rid, MESSAGE, user_id, client_id, text, conversation_id])
    return frame([rid, EXCHANGE, user_id, client_id, text, conversation_id, *_row(row)])


def reply_request(rid: int, user_id: int, reply_to: int, row: ReplyRow) -> bytes:
    return frame([rid, REPLY, user_id, reply_to, *_row(row)])


@dataclass(frozen=True, slots=True)
class Request:
    """A worker's request, checked: a wrong type here would fail a whole batch later."""

    rid: int
    op: str
    user_id: int
    client_id: str = ""  # a message's
    text: str = ""
    conversation_id: int | None = None
    reply_to: int = 0  # a reply's
    row: ReplyRow | None = None  # a reply's, or an exchange's


def _is(value: Any, kind: type, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _reply_row(fields: list[Any]) -> ReplyRow:
    if len(fields) != 4:
        raise WireError("a reply has four fields")
    text, finish_reason, sources, lengths = fields
    if not (_is(text, str) and _is(finish_reason, str) and _is(sources, list)):
        raise WireError("a reply's text, finish reason or sources")
    if not (_is(lengths, list) and all(_is(n, int) for n in lengths)):
        raise WireError("a reply's token lengths")
    return ReplyRow(text, finish_reason, sources, lengths)


def parse_request(payload: list[Any]) -> Request:
    """The request a frame holds; raise WireError for anything else."""
    rid, op, *args = payload
    if not _is(rid, int) or len(args) < 2 or not _is(args[0], int):
        raise WireError("a request starts with its id, kind and user")
    if op == REPLY:
        if not _is(args[1], int):
            raise WireError("a reply names its message")
        return Request(rid, op, args[0], reply_to=args[1], row=_reply_row(args[2:]))
    if op not in (MESSAGE, EXCHANGE) or len(args) < 4:
        raise WireError(f"unknown request {op!r}")
    user_id, client_id, text, conversation_id, *row = args
    if not (_is(client_id, str) and _is(text, str) and _is(conversation_id, int, True)):
        raise WireError("a message's client id, text or conversation")
    if op == MESSAGE and row:
        raise WireError("a message with a reply is an exchange")
    reply = _reply_row(row) if op == EXCHANGE else None
    return Request(rid, op, user_id, client_id, text, conversation_id, row=reply)


# -- answers ---------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def message_answer(rid: int, stored: StoredMessage, reply: StoredReply | None = None) -> bytes:
    fields = [
        stored.message_id,
        _time(stored.timestamp),
        stored.created,
        stored.conversation_id,
    ]
    if reply is not None:
        fields += [reply.reply_id, _time(reply.timestamp)]
    return frame([rid, OK, *fields])


def reply_answer(rid: int, reply: StoredReply) -> bytes:
    return frame([rid, OK, reply.reply_id, _time(reply.timestamp)])


def error_answer(rid: int, exc: BaseException) -> bytes:
    """What the worker raises in turn: the store's own refusals by name, anything else as
    StoreFailed (its text stays in the writer's log, as a database error's would)."""
    if isinstance(exc, RateLimited):
        return frame([rid, FAILED, "rate_limited", exc.retry_after])
    name = {IdConflict: "id_conflict", UnknownConversation: "unknown_conversation"}
    return frame([rid, FAILED, name.get(type(exc), "failed"), None])


def error(fields: list[Any]) -> Exception:
    kind, retry_after = fields
    if kind == "rate_limited":
        return RateLimited(float(retry_after))
    if kind == "id_conflict":
        return IdConflict()
    if kind == "unknown_conversation":
        return UnknownConversation()
    return StoreFailed("the shared writer could not store the row")


def stored_message(fields: list[Any]) -> StoredMessage:
    message_id, timestamp, created, conversation_id = fields[:4]
    return StoredMessage(message_id, _parse_time(timestamp), created, conversation_id)


def stored_reply(fields: list[Any]) -> StoredReply:
    reply_id, timestamp = fields
    return StoredReply(reply_id, _parse_time(timestamp))
