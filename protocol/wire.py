"""
The server's hot-path bytes, sans I/O: every one equal to what the general
encoder (:func:`protocol.frames.encode_bytes`) or RFC 6455 gives.

A reply sends one ``token`` frame per LLM token to every connection that
follows it, so :class:`ReplyFrames` builds the bytes of a reply's frames
without a dict or a dataclass per token; :func:`text_frame_header` is the
WebSocket header the server writes in front of each text frame when it writes
a loop turn's frames in one system call. ``tests/protocol/test_wire.py``
checks each against the general encoder (and the ``websockets`` library's
frame serializer).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

__all__ = ["ReplyFrames", "text_frame_header"]

_HEADER_1 = struct.Struct("!BB").pack
_HEADER_2 = struct.Struct("!BBH").pack
_HEADER_3 = struct.Struct("!BBQ").pack
_FIN_TEXT = 0x81  # FIN bit set, opcode 1 (text)


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked, final WebSocket text frame of ``size`` bytes (RFC 6455 5.2).

    Server frames are never masked; the payload length takes 7 bits, or 16 or 64 more.
    """
    if size < 126:
        return _HEADER_1(_FIN_TEXT, size)
    if size < 65536:
        return _HEADER_2(_FIN_TEXT, 126, size)
    return _HEADER_3(_FIN_TEXT, 127, size)


class ReplyFrames:
    """The ``start`` and ``token`` frames of the reply to message ``id``, as bytes.

    ``token(seq, text)`` is ``encode_bytes(Token(id, seq, text))``: the frame's fixed
    part is encoded once per reply. ``start(sources)`` takes the sources as the
    answer pipeline and the database give them (mappings ``{"id","topic","score"}``)
    and keeps their keys in the order given.
    """

    __slots__ = ("_token_prefix", "id")

    def __init__(self, id: str) -> None:
        self.id = id
        self._token_prefix = b'{"type":"token","id":' + orjson.dumps(id) + b',"seq":'

    def token(self, seq: int, text: str) -> bytes:
        return b'%s%d,"text":%s}' % (self._token_prefix, seq, orjson.dumps(text))

    def start(self, sources: Sequence[Mapping[str, Any]]) -> bytes:
        return orjson.dumps({"type": "start", "id": self.id, "sources": sources})
