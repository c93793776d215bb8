"""The frames between a worker and the shared writer (`server.chat.store_wire`)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from server.chat import store_wire as wire
from server.chat.store import (
    IdConflict,
    RateLimited,
    ReplyRow,
    StoredMessage,
    StoredReply,
    UnknownConversation,
)

ROW = ReplyRow("It is blue.", "stop", [{"id": 3, "topic": "Sky"}], [3, 4, 5])
AT = datetime(2026, 12, 5, 4, 0, 1, 123456, tzinfo=UTC)


def one(data: bytes) -> list:
    (payload,) = wire.FrameReader().feed(data)
    return payload


def test_requests_round_trip_through_the_reader():
    message = wire.parse_request(one(wire.message_request(1, 7, "c1", "Why?", None)))
    assert message == wire.Request(1, wire.MESSAGE, 7, "c1", "Why?", None)
    exchange = wire.parse_request(one(wire.message_request(2, 7, "c2", "Why?", 42, ROW)))
    assert exchange == wire.Request(2, wire.EXCHANGE, 7, "c2", "Why?", 42, row=ROW)
    reply = wire.parse_request(one(wire.reply_request(3, 7, 99, ROW)))
    assert reply == wire.Request(3, wire.REPLY, 7, reply_to=99, row=ROW)


def test_answers_round_trip_with_exact_timestamps():
    stored = StoredMessage(10, AT, True, 4)
    fields = one(wire.message_answer(5, stored, StoredReply(11, AT)))
    assert fields[:2] == [5, wire.OK]
    assert wire.stored_message(fields[2:]) == stored
    assert wire.stored_reply(fields[6:]) == StoredReply(11, AT)
    assert wire.stored_reply(one(wire.reply_answer(6, StoredReply(None, None)))[2:]) == (
        StoredReply(None, None)
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (IdConflict(), IdConflict),
        (UnknownConversation(), UnknownConversation),
        (RateLimited(12.5), RateLimited),
        (RuntimeError("connection reset by the database"), wire.StoreFailed),
    ],
)
def test_errors_cross_by_name_and_hide_their_text(exc, kind):
    rid, status, *fields = one(wire.error_answer(9, exc))
    assert (rid, status) == (9, wire.FAILED)
    again = wire.error(fields)
    assert type(again) is kind
    assert "database" not in str(again)
    if kind is RateLimited:
        assert again.retry_after == 12.5


def test_frames_split_anywhere_are_put_together():
    data = b"".join(wire.message_request(i, 1, f"c{i}", "é" * i, None) for i in range(5))
    reader = wire.FrameReader()
    frames = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert [f[0] for f in frames] == [0, 1, 2, 3, 4]
    assert frames[3][4] == "ééé"


@pytest.mark.parametrize(
    "data",
    [
        wire.HEADER.pack(wire.MAX_FRAME + 1),
        wire.HEADER.pack(3) + b"{x}",
        wire.HEADER.pack(2) + b"{}",
        wire.HEADER.pack(3) + b"[1]",
    ],
    ids=["too long", "not json", "not an array", "too short"],
)
def test_a_bad_frame_is_a_wire_error(data):
    with pytest.raises(wire.WireError):
        wire.FrameReader().feed(data)


@pytest.mark.parametrize(
    "payload",
    [
        ["1", "m", 7, "c", "t", None],  # the id a string
        [1, "m", True, "c", "t", None],  # a bool is no user
        [1, "m", 7, 5, "t", None],  # the client id a number
        [1, "m", 7, "c", "t", "4"],  # the conversation a string
        [1, "m", 7, "c", "t", None, "extra"],  # a message with more
        [1, "x", 7, "c", "t", None, "reply", "stop", []],  # a reply short of a field
        [1, "x", 7, "c", "t", None, "reply", "stop", [], ["3"]],  # a length a string
        [1, "r", 7, "99", "reply", "stop", [], []],  # the message a string
        [1, "r", 7, 99, "reply", "stop", {}, []],  # the sources not a list
        [1, "q", 7, "c", "t", None],  # no such request
    ],
)
def test_a_request_of_the_wrong_shape_is_refused(payload):
    with pytest.raises(wire.WireError):
        wire.parse_request(one(wire.frame(payload)))


def test_text_that_is_not_utf8_cannot_be_framed():
    with pytest.raises(orjson.JSONEncodeError):
        wire.message_request(1, 7, "c", "\ud800", None)
