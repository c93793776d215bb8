"""
Errors of the WebSocket protocol, and the codes that travel on the wire.

The exception tree::

    Exception
    ├── ProtocolError       a frame broke the protocol; raised by decode() and
    │                       decode_server(); carries the ErrorCode to answer with
    └── ServerError         the server refused something with an ``error`` frame;
        │                   raised by the client (protocol.client)
        └── ReplyError      a reply failed or could not be delivered

Codes::

    ErrorCode   the ``code`` of an ``error`` frame (a string on the wire)
    CloseCode   the WebSocket close codes the server uses

This module does no I/O and imports no network library.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .frames import End, Error

__all__ = ["CloseCode", "ErrorCode", "ProtocolError", "ReplyError", "ServerError"]


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` frame. Values are the contract's strings."""

    #: The frame is not a JSON object, has an unknown ``type``, a missing field,
    #: a field of the wrong JSON type or value, a NUL character, or is binary.
    INVALID_FRAME = "invalid_frame"
    #: No valid authentication (before ``ready``: followed by close 4401).
    UNAUTHORIZED = "unauthorized"
    #: The token has expired, or is about to: send a fresh ``auth`` frame.
    TOKEN_EXPIRED = "token_expired"
    #: A ``message`` text over 4000 code points (the connection stays open).
    TOO_LARGE = "too_large"
    #: Over ``CHAT_RATE_PER_MINUTE``; the frame carries ``retry_after`` seconds.
    RATE_LIMITED = "rate_limited"
    #: ``cancel`` or ``resume`` of an id the server does not know (or deleted).
    UNKNOWN_MESSAGE = "unknown_message"
    #: A ``message`` reusing an already stored id with another text or conversation.
    ID_CONFLICT = "id_conflict"
    #: A ``message`` naming a conversation that does not exist or is another user's.
    UNKNOWN_CONVERSATION = "unknown_conversation"
    #: The LLM failed; an ``end`` with ``finish_reason`` ``error`` follows.
    UPSTREAM_ERROR = "upstream_error"
    #: The database is away; a refused ``message`` is not stored.
    UNAVAILABLE = "unavailable"
    #: Anything else that went wrong on the server.
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes sent by the server."""

    NORMAL = 1000
    #: The server is shutting down; reconnect (to another instance) and resume.
    GOING_AWAY = 1001
    #: Policy violation, e.g. too many connections for this user.
    POLICY = 1008
    #: A frame over 64 KiB.
    TOO_LARGE = 1009
    #: The client is too slow to read (over 1 MiB behind); replies go on and
    #: can be resumed after reconnecting.
    TRY_AGAIN_LATER = 1013
    #: Authentication failed or the token expired.
    AUTH_FAILED = 4401
    #: No authentication within 10 seconds.
    AUTH_TIMEOUT = 4408


class ProtocolError(Exception):
    """A frame that breaks the protocol.

    The server answers it with ``{"type": "error", "id": id, "code": code,
    "message": message}`` (plus ``retry_after`` when set).

    Attributes:
        code: the error code to send.
        message: a short human-readable explanation that names the field.
        id: the frame's message id when it carried a valid-looking string id
            (so the error can be tied to that message), else ``None``.
        retry_after: seconds to wait before retrying, for ``rate_limited``.
        close_code: set when the contract says to close the connection
            instead of answering (a frame over 64 KiB: 1009); else ``None``.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        id: str | None = None,
        retry_after: float | None = None,
        close_code: CloseCode | None = None,
    ) -> None:
        super().__init__(code, message, id)
        self.code = code
        self.message = message
        self.id = id
        self.retry_after = retry_after
        self.close_code = close_code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ServerError(Exception):
    """The server answered with an ``error`` frame (raised by the client).

    Attributes:
        frame: the :class:`~protocol.frames.Error` frame.
        code, message, id, retry_after: copied from the frame.
    """

    def __init__(self, frame: Error) -> None:
        super().__init__(frame)
        self.frame = frame
        self.code = frame.code
        self.message = frame.message
        self.id = frame.id
        self.retry_after = frame.retry_after

    def __str__(self) -> str:
        where = f" (message {self.id})" if self.id is not None else ""
        return f"{self.code}: {self.message}{where}"


class ReplyError(ServerError):
    """A reply failed or was refused.

    Attributes:
        end: the ``end`` frame (``finish_reason`` ``error``) that closed the
            failed reply, with the text generated so far; ``None`` when the
            request was refused and no reply exists (e.g. ``unknown_message``).
    """

    def __init__(self, frame: Error, end: End | None = None) -> None:
        super().__init__(frame)
        self.end = end
