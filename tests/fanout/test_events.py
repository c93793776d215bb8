"""The fan-out's events: round trips, the payload shape, size limits, bad payloads."""

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import ConversationChange, ErrorCode, FinishReason
from server.fanout.events import (
    Cancel,
    ConversationChanged,
    Ended,
    EventError,
    Failed,
    Hello,
    MessageStored,
    Started,
    Sync,
    Tokens,
    decode,
    encode,
    fit,
)

THUMB = "\U0001f44d\U0001f3fd"
TS = "2026-11-26T01:02:03.123456Z"
EVENTS = [
    Hello(),
    MessageStored(7, "m1", 11, TS, "Hello " + THUMB),
    MessageStored(7, "m1", 11, TS, None),
    Sync(7, "m1", 11),
    Started(7, "m1", 11, ()),
    Started(7, "m1", 11, ({"id": "3", "topic": "Billing", "score": 0.91},)),
    Tokens(7, "m1", 0, ("Hel",)),
    Tokens(7, "m|1", 4, ("lo", " " + THUMB, "")),
    Failed(7, "m1", ErrorCode.UPSTREAM_ERROR, "the LLM failed"),
    Ended(7, "m1", 12, FinishReason.STOP),
    Ended(7, "m1", None, FinishReason.ERROR),
    Cancel(7, "m1"),
    MessageStored(7, "m1", 11, TS, "in a conversation", 42),
    ConversationChanged(7, ConversationChange.CREATED, 42, "Billing " + THUMB),
    ConversationChanged(7, ConversationChange.DELETED, 42, None),
]


@pytest.mark.parametrize("event", EVENTS, ids=repr)
def test_events_round_trip(event):
    origin, decoded = decode(encode("a1b2c3", event))
    assert (origin, decoded) == ("a1b2c3", event)
    assert type(decoded.code if isinstance(decoded, Failed) else decoded) is type(
        event.code if isinstance(event, Failed) else event
    )


@given(
    user_id=st.integers(1, 2**63 - 1),
    client_id=st.text(min_size=1, max_size=64),
    seq=st.integers(0, 2**63 - 1),
    tokens=st.lists(st.text(max_size=20), max_size=10),
)
def test_any_tokens_round_trip(user_id, client_id, seq, tokens):
    event = Tokens(user_id, client_id, seq, tuple(tokens))
    assert decode(encode("x", event)) == ("x", event)


def test_the_payload_names_its_fields():
    payload = encode("a1", Tokens(7, "m1", 4, ("lo",)))
    origin, _, body = payload.partition("|")
    assert origin == "a1"
    assert orjson.loads(body) == {
        "kind": "tokens",
        "user_id": 7,
        "client_id": "m1",
        "seq": 4,
        "tokens": ["lo"],
    }
    ended = orjson.loads(
        encode("a1", Ended(7, "m1", None, FinishReason.CANCELLED)).split("|", 1)[1]
    )
    assert ended == {
        "kind": "ended",
        "user_id": 7,
        "client_id": "m1",
        "reply_id": None,
        "finish_reason": "cancelled",
    }


@pytest.mark.parametrize(
    "payload",
    [
        "no bar at all",
        "a1|not json",
        "a1|[1, 2]",
        'a1|{"user_id": 7}',
        'a1|{"kind": "nonsense"}',
        'a1|{"kind": "cancel", "user_id": 7}',
        'a1|{"kind": "tokens", "user_id": 7, "client_id": "m1", "seq": 0, "tokens": "abc"}',
        'a1|{"kind": "failed", "user_id": 7, "client_id": "m1", "code": "nope", "message": "x"}',
        'a1|{"kind": "ended", "user_id": 7, "client_id": "m", "reply_id": 1, "finish_reason": "x"}',
    ],
)
def test_what_is_not_an_event_is_refused(payload):
    with pytest.raises(EventError):
        decode(payload)


def test_a_payload_under_the_limit_is_sent_as_it_is():
    event = MessageStored(7, "m1", 11, TS, "short")
    assert fit("a1", event, 7900) == [encode("a1", event)]


def test_a_message_too_long_goes_without_its_text():
    event = MessageStored(7, "m1", 11, TS, "é" * 4000)  # 8,000 bytes of text
    (payload,) = fit("a1", event, 7900)
    assert decode(payload)[1] == MessageStored(7, "m1", 11, TS, None)


def test_a_long_run_of_tokens_is_cut_in_pieces_that_keep_their_seq():
    tokens = tuple(f"{THUMB}{i:04d}" for i in range(1000))
    payloads = fit("a1", Tokens(7, "m1", 5, tokens), 7900)
    assert len(payloads) > 1 and all(len(p.encode()) <= 7900 for p in payloads)
    pieces = [decode(p)[1] for p in payloads]
    assert [p.seq for p in pieces] == [
        5 + sum(len(q.tokens) for q in pieces[:i]) for i in range(len(pieces))
    ]
    assert tuple(t for p in pieces for t in p.tokens) == tokens


def test_an_event_that_cannot_fit_gives_no_payload():
    assert fit("a1", Tokens(7, "m1", 0, ("x" * 8000,)), 7900) == []
    assert fit("a1", Failed(7, "m1", ErrorCode.INTERNAL, "x" * 8000), 7900) == []


def test_a_message_stored_by_an_earlier_version_has_no_conversation():
    payload = 'abc|{"kind":"message_stored","user_id":7,"client_id":"m1","message_id":11,'
    payload += f'"timestamp":"{TS}","text":"hi"}}'
    assert decode(payload) == ("abc", MessageStored(7, "m1", 11, TS, "hi", None))


def test_an_unknown_conversation_change_is_refused():
    payload = 'abc|{"kind":"conversation","user_id":7,"event":"archived","conversation_id":1,'
    payload += '"title":null}'
    with pytest.raises(EventError):
        decode(payload)
