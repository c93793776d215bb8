"""
The frames of the chat WebSocket channel (protocol version 1), sans I/O.

Every frame is a frozen dataclass; :func:`encode` turns any frame into the
JSON text sent on the wire, :func:`decode` parses and strictly validates what a
client sent, and :func:`decode_server` parses what the server sent (for
clients; lenient about fields it does not know).

Client → server: :class:`Auth`, :class:`Message`, :class:`Cancel`,
:class:`Resume`, :class:`Ping`.

Server → client: :class:`Ready`, :class:`Ack`, :class:`Start`, :class:`Token`,
:class:`End`, :class:`Error`, :class:`Pong`, :class:`Echo` (``"type":
"message"``, the copy of a message sent from another connection),
:class:`ConversationEvent` (``"type": "conversation"``: a conversation was
created, renamed or deleted elsewhere).

See README.md in this package for the full protocol.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson

from .errors import CloseCode, ErrorCode, ProtocolError

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_ID_CHARS",
    "MAX_SEQ",
    "MAX_TEXT_CHARS",
    "PROTOCOL_VERSION",
    "Ack",
    "Auth",
    "Cancel",
    "ClientFrame",
    "ConversationChange",
    "ConversationEvent",
    "Echo",
    "End",
    "Error",
    "FinishReason",
    "Frame",
    "Message",
    "Pending",
    "Ping",
    "Pong",
    "Ready",
    "Resume",
    "ServerFrame",
    "Source",
    "Start",
    "Token",
    "decode",
    "decode_server",
    "encode",
    "encode_bytes",
    "format_timestamp",
    "parse_timestamp",
]

PROTOCOL_VERSION = 1
#: A ``message`` text is 1 to MAX_TEXT_CHARS Unicode code points.
MAX_TEXT_CHARS = 4000
#: A message id is 1 to MAX_ID_CHARS Unicode code points.
MAX_ID_CHARS = 64
#: A frame over this many bytes (UTF-8) closes the connection with 1009.
MAX_FRAME_BYTES = 64 * 1024
#: The largest ``seq`` / ``after_seq`` accepted (fits PostgreSQL's bigint).
MAX_SEQ = 2**63 - 1


class FinishReason(enum.StrEnum):
    """Why a reply ended (the ``finish_reason`` of an ``end`` frame)."""

    STOP = "stop"
    CANCELLED = "cancelled"
    ERROR = "error"


def format_timestamp(dt: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC, e.g. ``2026-11-26T01:02:03.123456Z``.

    Raises:
        ValueError: if ``dt`` is naive (its time zone would be a guess).
    """
    if dt.tzinfo is not UTC:  # asyncpg's timestamps are in UTC already: no conversion
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware")
        dt = dt.astimezone(UTC)
    # "…+00:00" → "…Z": faster than strftime, and the same text (every ack carries one).
    return dt.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_timestamp(value: str) -> datetime:
    """Parse a frame timestamp (RFC 3339) into an aware datetime in UTC."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return dt.astimezone(UTC)


# ---------------------------------------------------------------------------
# Client → server frames


@dataclass(frozen=True, slots=True)
class Auth:
    """Authenticate with a bearer token: the first frame when no header was
    sent, or later to replace a token that is about to expire."""

    token: str
    type: ClassVar[str] = "auth"

    def to_json(self) -> dict[str, Any]:
        return {"type": "auth", "token": self.token}


@dataclass(frozen=True, slots=True)
class Message:
    """A user message; ``id`` is the client's own id (a UUID is best).
    ``conversation_id`` None: the user's most recently active conversation."""

    id: str
    text: str
    conversation_id: int | None = None
    type: ClassVar[str] = "message"

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"type": "message", "id": self.id, "text": self.text}
        if self.conversation_id is not None:
            obj["conversation_id"] = self.conversation_id
        return obj


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the reply to message ``id``."""

    id: str
    type: ClassVar[str] = "cancel"

    def to_json(self) -> dict[str, Any]:
        return {"type": "cancel", "id": self.id}


@dataclass(frozen=True, slots=True)
class Resume:
    """Send the reply to ``id`` from the token after ``after_seq`` (-1: all)."""

    id: str
    after_seq: int = -1
    type: ClassVar[str] = "resume"

    def to_json(self) -> dict[str, Any]:
        return {"type": "resume", "id": self.id, "after_seq": self.after_seq}


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping, answered with :class:`Pong`."""

    type: ClassVar[str] = "ping"

    def to_json(self) -> dict[str, Any]:
        return {"type": "ping"}


# ---------------------------------------------------------------------------
# Server → client frames


@dataclass(frozen=True, slots=True)
class Pending:
    """A reply still being generated, listed in :class:`Ready`."""

    id: str
    message_id: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "message_id": self.message_id}


@dataclass(frozen=True, slots=True)
class Ready:
    """Authenticated: always the first frame the server sends."""

    user_id: int
    email: str | None  # None: a guest
    pending: tuple[Pending, ...] = ()
    protocol: int = PROTOCOL_VERSION
    is_guest: bool = False
    type: ClassVar[str] = "ready"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "ready",
            "protocol": self.protocol,
            "user": {"id": self.user_id, "email": self.email, "is_guest": self.is_guest},
            "pending": [p.to_json() for p in self.pending],
        }


@dataclass(frozen=True, slots=True)
class Ack:
    """The user message ``id`` is committed as row ``message_id``, in conversation
    ``conversation_id`` (None only from a server that has no conversations)."""

    id: str
    message_id: int
    timestamp: str
    conversation_id: int | None = None
    type: ClassVar[str] = "ack"

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "type": "ack",
            "id": self.id,
            "message_id": self.message_id,
            "timestamp": self.timestamp,
        }
        if self.conversation_id is not None:
            obj["conversation_id"] = self.conversation_id
        return obj


@dataclass(frozen=True, slots=True)
class Source:
    """A knowledge-base entry matched for a reply (``id`` is always a string)."""

    id: str
    topic: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "topic": self.topic, "score": self.score}


@dataclass(frozen=True, slots=True)
class Start:
    """The reply to ``id`` begins; ``sources`` best first, at most 5."""

    id: str
    sources: tuple[Source, ...] = ()
    type: ClassVar[str] = "start"

    def to_json(self) -> dict[str, Any]:
        return {"type": "start", "id": self.id, "sources": [s.to_json() for s in self.sources]}


@dataclass(frozen=True, slots=True)
class Token:
    """The next piece of the reply to ``id``; ``seq`` counts 0, 1, 2 …"""

    id: str
    seq: int
    text: str
    type: ClassVar[str] = "token"

    def to_json(self) -> dict[str, Any]:
        return {"type": "token", "id": self.id, "seq": self.seq, "text": self.text}


@dataclass(frozen=True, slots=True)
class End:
    """The reply to ``id`` is stored as ``message_id``; ``text`` is all of it."""

    id: str
    message_id: int
    text: str
    finish_reason: str
    type: ClassVar[str] = "end"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "end",
            "id": self.id,
            "message_id": self.message_id,
            "text": self.text,
            "finish_reason": self.finish_reason,
        }


@dataclass(frozen=True, slots=True)
class Error:
    """A frame was refused, or a reply failed. ``id`` is null when the error
    is not about one message. ``code`` is an :class:`ErrorCode`, or a plain
    string for a code this version does not know (from :func:`decode_server`)."""

    id: str | None
    code: ErrorCode | str
    message: str
    retry_after: float | None = None
    type: ClassVar[str] = "error"

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> Error:
        """The frame that answers a :class:`ProtocolError`."""
        return cls(exc.id, exc.code, exc.message, exc.retry_after)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "type": "error",
            "id": self.id,
            "code": self.code,
            "message": self.message,
        }
        if self.retry_after is not None:
            obj["retry_after"] = self.retry_after
        return obj


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to :class:`Ping`."""

    type: ClassVar[str] = "pong"

    def to_json(self) -> dict[str, Any]:
        return {"type": "pong"}


@dataclass(frozen=True, slots=True)
class Echo:
    """A message sent from another connection of the same user (on the wire:
    ``"type": "message"``); its ``start``/``token``/``end`` frames follow."""

    id: str
    message_id: int
    text: str
    timestamp: str
    conversation_id: int | None = None
    type: ClassVar[str] = "message"

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "type": "message",
            "id": self.id,
            "message_id": self.message_id,
            "text": self.text,
            "timestamp": self.timestamp,
        }
        if self.conversation_id is not None:
            obj["conversation_id"] = self.conversation_id
        return obj


class ConversationChange(enum.StrEnum):
    """What happened to a conversation (the ``event`` of a ``conversation`` frame)."""

    CREATED = "created"
    RENAMED = "renamed"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ConversationEvent:
    """A conversation of the user was created, renamed or deleted (from any connection,
    over REST or on any instance): ``{"type":"conversation","event","id","title"}``.
    ``title`` is the current title (null: none yet, or deleted)."""

    event: ConversationChange | str
    id: int
    title: str | None = None
    type: ClassVar[str] = "conversation"

    def to_json(self) -> dict[str, Any]:
        return {"type": "conversation", "event": self.event, "id": self.id, "title": self.title}


ClientFrame = Auth | Message | Cancel | Resume | Ping
ServerFrame = Ready | Ack | Start | Token | End | Error | Pong | Echo | ConversationEvent
Frame = ClientFrame | ServerFrame


# ---------------------------------------------------------------------------
# Encoding (the hot path: one Token per LLM token)


def encode_bytes(frame: Frame) -> bytes:
    """Encode any frame as UTF-8 JSON bytes (send it as a *text* frame)."""
    return orjson.dumps(frame.to_json())


def encode(frame: Frame) -> str:
    """Encode any frame as JSON text for a WebSocket text frame.

    Frames built by the server are trusted and not validated again.
    """
    return orjson.dumps(frame.to_json()).decode()


# ---------------------------------------------------------------------------
# Decoding client frames (strict: this is what the server trusts)


def _valid_id(value: object) -> str | None:
    """``value`` if it could be a message id, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and "\x00" not in value:
        return value
    return None


def _invalid(message: str, id: str | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FRAME, message, id)


def _field(obj: dict[str, Any], name: str, id: str | None) -> Any:
    try:
        return obj[name]
    except KeyError:
        raise _invalid(f"missing field '{name}'", id) from None


def _string(obj: dict[str, Any], name: str, id: str | None) -> str:
    value = _field(obj, name, id)
    if not isinstance(value, str):
        raise _invalid(f"field '{name}' must be a string", id)
    if "\x00" in value:
        raise _invalid(f"field '{name}' must not contain NUL characters", id)
    return value


def _message_id(obj: dict[str, Any]) -> str:
    value = _string(obj, "id", None)
    if not 0 < len(value) <= MAX_ID_CHARS:
        raise _invalid(f"field 'id' must be 1 to {MAX_ID_CHARS} characters")
    return value


def _decode_auth(obj: dict[str, Any], id: str | None) -> Auth:
    token = _string(obj, "token", id)
    if not token:
        raise _invalid("field 'token' must not be empty", id)
    return Auth(token)


def _decode_message(obj: dict[str, Any], id: str | None) -> Message:
    msg_id = _message_id(obj)
    text = _field(obj, "text", msg_id)
    if not isinstance(text, str):
        raise _invalid("field 'text' must be a string", msg_id)
    if len(text) > MAX_TEXT_CHARS:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"field 'text' is over {MAX_TEXT_CHARS} characters", msg_id
        )
    if not text:
        raise _invalid("field 'text' must not be empty", msg_id)
    if "\x00" in text:
        raise _invalid("field 'text' must not contain NUL characters", msg_id)
    conversation_id = obj.get("conversation_id")  # null counts as absent
    if conversation_id is not None and type(conversation_id) is not int:
        raise _invalid("field 'conversation_id' must be an integer", msg_id)
    return Message(msg_id, text, conversation_id)


def _decode_cancel(obj: dict[str, Any], id: str | None) -> Cancel:
    return Cancel(_message_id(obj))


def _decode_resume(obj: dict[str, Any], id: str | None) -> Resume:
    msg_id = _message_id(obj)
    after_seq = _field(obj, "after_seq", msg_id)
    # bool is a subclass of int in Python but not a JSON number.
    if type(after_seq) is not int or not -1 <= after_seq <= MAX_SEQ:
        raise _invalid("field 'after_seq' must be an integer >= -1", msg_id)
    return Resume(msg_id, after_seq)


def _decode_ping(obj: dict[str, Any], id: str | None) -> Ping:
    return Ping()


_CLIENT_DECODERS = {
    "auth": _decode_auth,
    "message": _decode_message,
    "cancel": _decode_cancel,
    "resume": _decode_resume,
    "ping": _decode_ping,
}


def _load(data: str | bytes) -> Any:
    if isinstance(data, str):
        # A code point is at most 4 UTF-8 bytes: only encode when in doubt.
        size = len(data)
        if size * 4 > MAX_FRAME_BYTES:
            size = len(data.encode("utf-8", "surrogatepass"))
    else:
        size = len(data)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"frame is over {MAX_FRAME_BYTES} bytes",
            close_code=CloseCode.TOO_LARGE,
        )
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _invalid("frame is not valid UTF-8 JSON") from None


def decode(data: str | bytes) -> ClientFrame:
    """Parse and validate a frame sent by a client.

    Unknown fields are ignored. Lengths count Unicode code points.

    Args:
        data: the text of a WebSocket text frame (``bytes`` must be UTF-8).

    Returns:
        :class:`Auth`, :class:`Message`, :class:`Cancel`, :class:`Resume` or
        :class:`Ping`.

    Raises:
        ProtocolError: ``too_large`` for a frame over :data:`MAX_FRAME_BYTES`
            (with ``close_code`` 1009: close, do not answer) or a text over
            :data:`MAX_TEXT_CHARS` (answer, stay open); ``invalid_frame`` for
            anything else that is wrong. Its ``id`` is the frame's ``id`` when
            that is a valid message id.
    """
    obj = _load(data)
    if not isinstance(obj, dict):
        raise _invalid("frame must be a JSON object")
    id = _valid_id(obj.get("id"))
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise _invalid("field 'type' must be a string", id)
    decoder = _CLIENT_DECODERS.get(kind)
    if decoder is None:
        raise _invalid(f"unknown frame type {kind[:32]!r}", id)
    return decoder(obj, id)


# ---------------------------------------------------------------------------
# Decoding server frames (for clients: lenient about what it does not know)


def _s_str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _invalid(f"field '{name}' must be a string")
    return value


def _s_int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if type(value) is not int:
        raise _invalid(f"field '{name}' must be an integer")
    return value


def _s_float(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name)
    if type(value) is not float and type(value) is not int:
        raise _invalid(f"field '{name}' must be a number")
    return float(value)


def _s_list(obj: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = obj.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _invalid(f"field '{name}' must be a list of objects")
    return value


def _known(enum_type: type[enum.StrEnum], value: str) -> str:
    """The enum member for ``value``, or ``value`` itself if this version does not know it."""
    try:
        return enum_type(value)
    except ValueError:
        return value


def _s_ready(obj: dict[str, Any]) -> Ready:
    user = obj.get("user")
    if not isinstance(user, dict):
        raise _invalid("field 'user' must be an object")
    pending = tuple(
        Pending(_s_str(p, "id"), _s_int(p, "message_id")) for p in _s_list(obj, "pending")
    )
    email = None if user.get("email") is None else _s_str(user, "email")
    is_guest = user.get("is_guest") is True
    return Ready(_s_int(user, "id"), email, pending, _s_int(obj, "protocol"), is_guest)


def _s_opt_int(obj: dict[str, Any], name: str) -> int | None:
    return None if obj.get(name) is None else _s_int(obj, name)


def _s_ack(obj: dict[str, Any]) -> Ack:
    return Ack(
        _s_str(obj, "id"),
        _s_int(obj, "message_id"),
        _s_str(obj, "timestamp"),
        _s_opt_int(obj, "conversation_id"),
    )


def _s_start(obj: dict[str, Any]) -> Start:
    sources = tuple(
        Source(_s_str(s, "id"), _s_str(s, "topic"), _s_float(s, "score"))
        for s in _s_list(obj, "sources")
    )
    return Start(_s_str(obj, "id"), sources)


def _s_token(obj: dict[str, Any]) -> Token:
    return Token(_s_str(obj, "id"), _s_int(obj, "seq"), _s_str(obj, "text"))


def _s_end(obj: dict[str, Any]) -> End:
    reason = _known(FinishReason, _s_str(obj, "finish_reason"))
    return End(_s_str(obj, "id"), _s_int(obj, "message_id"), _s_str(obj, "text"), reason)


def _s_error(obj: dict[str, Any]) -> Error:
    id = obj.get("id")
    if id is not None and not isinstance(id, str):
        raise _invalid("field 'id' must be a string or null")
    code = _known(ErrorCode, _s_str(obj, "code"))
    retry_after = None if obj.get("retry_after") is None else _s_float(obj, "retry_after")
    return Error(id, code, _s_str(obj, "message"), retry_after)


def _s_pong(obj: dict[str, Any]) -> Pong:
    return Pong()


def _s_echo(obj: dict[str, Any]) -> Echo:
    return Echo(
        _s_str(obj, "id"),
        _s_int(obj, "message_id"),
        _s_str(obj, "text"),
        _s_str(obj, "timestamp"),
        _s_opt_int(obj, "conversation_id"),
    )


def _s_conversation(obj: dict[str, Any]) -> ConversationEvent:
    title = None if obj.get("title") is None else _s_str(obj, "title")
    event = _known(ConversationChange, _s_str(obj, "event"))
    return ConversationEvent(event, _s_int(obj, "id"), title)


_SERVER_DECODERS = {
    "ready": _s_ready,
    "ack": _s_ack,
    "start": _s_start,
    "token": _s_token,
    "end": _s_end,
    "error": _s_error,
    "pong": _s_pong,
    "message": _s_echo,
    "conversation": _s_conversation,
}


def decode_server(data: str | bytes) -> ServerFrame:
    """Parse a frame sent by the server (for clients).

    Unknown fields are ignored; an unknown ``code`` or ``finish_reason`` is
    kept as a plain string. No size limit applies (replies can be long).

    Raises:
        ProtocolError: ``invalid_frame`` if the data is not JSON, not an
            object, has an unknown ``type`` or misses or mistypes a field.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _invalid("frame is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise _invalid("frame must be a JSON object")
    kind = obj.get("type")
    decoder = _SERVER_DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise _invalid(f"unknown frame type {str(kind)[:32]!r}")
    return decoder(obj)
