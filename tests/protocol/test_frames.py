from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    MAX_FRAME_BYTES,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    Cancel,
    CloseCode,
    ConversationChange,
    ConversationEvent,
    Echo,
    End,
    Error,
    ErrorCode,
    FinishReason,
    Message,
    Pending,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    Resume,
    Source,
    Start,
    Token,
    decode,
    decode_server,
    encode,
    encode_bytes,
    format_timestamp,
    parse_timestamp,
)

TS = "2026-11-26T01:02:03.123456Z"
# One user-perceived character, several code points (thumbs up + skin tone).
THUMB = "\U0001f44d\U0001f3fd"
# Family: man ZWJ woman ZWJ girl: 5 code points.
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"

CLIENT_FRAMES = [
    Auth("eyJhbGciOiJIUzI1NiJ9.e30.sig"),
    Message("3f2c6a7e-1b2c-4d5e-8f90-123456789abc", "Hello, world"),
    Message("x", "é" * MAX_TEXT_CHARS),
    Cancel("a" * MAX_ID_CHARS),
    Resume("m1", -1),
    Resume("m1", 41),
    Ping(),
    Message("m1", "in a conversation", 42),
]

SERVER_FRAMES = [
    Ready(7, "a@b.c"),
    Ready(7, "a@b.c", (Pending("m1", 11), Pending("m2", 12))),
    Ready(8, None, is_guest=True),
    Ack("m1", 11, TS),
    Ack("m1", 11, TS, 42),
    Echo("m1", 11, "in a conversation", TS, 42),
    ConversationEvent(ConversationChange.CREATED, 42, "Billing"),
    ConversationEvent(ConversationChange.RENAMED, 42, "Refunds " + THUMB),
    ConversationEvent(ConversationChange.DELETED, 42, None),
    Start("m1"),
    Start("m1", (Source("3", "Billing", 0.91), Source("4#2", "Refunds", 0.5))),
    Token("m1", 0, "Hel"),
    Token("m1", 1, "lo " + THUMB),
    End("m1", 12, "Hello " + THUMB, FinishReason.STOP),
    End("m1", 12, "", FinishReason.CANCELLED),
    End("m1", 12, "Hel", FinishReason.ERROR),
    Error(None, ErrorCode.UNAUTHORIZED, "bad token"),
    Error("m1", ErrorCode.RATE_LIMITED, "slow down", 12.5),
    Error("m1", ErrorCode.UPSTREAM_ERROR, "the LLM failed"),
    Pong(),
    Echo("m1", 11, "Hello from another tab", TS),
]


def obj(frame):
    return orjson.loads(encode(frame))


def message(id="m1", text="hi", **extra):
    return orjson.dumps({"type": "message", "id": id, "text": text, **extra})


def refused(data):
    with pytest.raises(ProtocolError) as info:
        decode(data)
    return info.value


# --- round trips and wire shapes ---------------------------------------------


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=repr)
def test_client_frames_round_trip(frame):
    assert decode(encode(frame)) == frame
    assert decode(encode_bytes(frame)) == frame
    assert encode_bytes(frame).decode() == encode(frame)


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=repr)
def test_server_frames_round_trip(frame):
    assert decode_server(encode(frame)) == frame
    assert decode_server(encode_bytes(frame)) == frame


def test_every_frame_is_a_json_object_with_its_type():
    for frame in CLIENT_FRAMES + SERVER_FRAMES:
        assert obj(frame)["type"] == frame.type


def test_ready_shape():
    assert obj(Ready(7, "a@b.c", (Pending("m1", 11),))) == {
        "type": "ready",
        "protocol": PROTOCOL_VERSION,
        "user": {"id": 7, "email": "a@b.c", "is_guest": False},
        "pending": [{"id": "m1", "message_id": 11}],
    }
    assert obj(Ready(7, "a@b.c"))["pending"] == []
    assert obj(Ready(8, None, is_guest=True))["user"] == {"id": 8, "email": None, "is_guest": True}


def test_conversation_fields():
    assert obj(Ack("m1", 11, TS, 42))["conversation_id"] == 42
    assert obj(Echo("m1", 11, "hi", TS, 42))["conversation_id"] == 42
    assert obj(Message("m1", "hi", 42)) == {
        "type": "message",
        "id": "m1",
        "text": "hi",
        "conversation_id": 42,
    }
    assert obj(ConversationEvent(ConversationChange.RENAMED, 42, "New")) == {
        "type": "conversation",
        "event": "renamed",
        "id": 42,
        "title": "New",
    }


def test_message_conversation_id_is_optional_and_an_integer():
    assert decode(message(conversation_id=42)) == Message("m1", "hi", 42)
    assert decode(message(conversation_id=None)) == Message("m1", "hi")  # null: absent
    # Any integer is a well-formed frame; one no conversation has is the server's
    # `unknown_conversation`, not a malformed frame.
    assert decode(message(conversation_id=-1)) == Message("m1", "hi", -1)
    for bad in ("42", 4.2, True, [42], {"id": 42}):
        with pytest.raises(ProtocolError) as err:
            decode(message(conversation_id=bad))
        assert err.value.code == ErrorCode.INVALID_FRAME and err.value.id == "m1"


def test_an_unknown_conversation_event_is_kept_as_text():
    frame = decode_server(b'{"type":"conversation","event":"archived","id":3,"title":null}')
    assert frame == ConversationEvent("archived", 3, None)


def test_server_frame_shapes():
    assert obj(Ack("m1", 11, TS)) == {"type": "ack", "id": "m1", "message_id": 11, "timestamp": TS}
    assert obj(Start("m1", (Source("3", "T", 0.5),))) == {
        "type": "start",
        "id": "m1",
        "sources": [{"id": "3", "topic": "T", "score": 0.5}],
    }
    assert obj(Start("m1"))["sources"] == []
    assert obj(Token("m1", 3, "x")) == {"type": "token", "id": "m1", "seq": 3, "text": "x"}
    assert obj(End("m1", 12, "x", FinishReason.STOP)) == {
        "type": "end",
        "id": "m1",
        "message_id": 12,
        "text": "x",
        "finish_reason": "stop",
    }
    assert obj(Pong()) == {"type": "pong"}
    assert obj(Echo("m1", 11, "hi", TS)) == {
        "type": "message",
        "id": "m1",
        "message_id": 11,
        "text": "hi",
        "timestamp": TS,
    }


def test_error_carries_retry_after_only_when_set():
    assert obj(Error(None, ErrorCode.INVALID_FRAME, "bad")) == {
        "type": "error",
        "id": None,
        "code": "invalid_frame",
        "message": "bad",
    }
    assert obj(Error("m1", ErrorCode.RATE_LIMITED, "slow", 2.0))["retry_after"] == 2.0


def test_client_frame_shapes():
    assert obj(Auth("t")) == {"type": "auth", "token": "t"}
    assert obj(Message("m1", "hi")) == {"type": "message", "id": "m1", "text": "hi"}
    assert obj(Cancel("m1")) == {"type": "cancel", "id": "m1"}
    assert obj(Resume("m1", 4)) == {"type": "resume", "id": "m1", "after_seq": 4}
    assert obj(Ping()) == {"type": "ping"}


def test_error_from_exception():
    exc = ProtocolError(ErrorCode.RATE_LIMITED, "slow down", "m1", retry_after=3.0)
    assert Error.from_exception(exc) == Error("m1", ErrorCode.RATE_LIMITED, "slow down", 3.0)


# --- decode(): what a client may send ----------------------------------------


def test_unknown_fields_are_ignored():
    assert decode(message(extra={"a": [1, 2]}, seq=4)) == Message("m1", "hi")
    assert decode(b'{"type":"ping","id":3,"x":null}') == Ping()
    assert decode('{"type":"resume","id":"m","after_seq":0,"z":true}') == Resume("m", 0)


def test_str_and_bytes_input_are_equal():
    data = message(text="héllo " + FAMILY)
    assert decode(data) == decode(data.decode()) == Message("m1", "héllo " + FAMILY)


@pytest.mark.parametrize("data", ["[]", "[1]", '"message"', "1", "null", "true", "1.5"])
def test_non_object_json(data):
    exc = refused(data)
    assert exc.code == ErrorCode.INVALID_FRAME
    assert exc.id is None
    assert "object" in exc.message


@pytest.mark.parametrize(
    "data",
    ["", "{", '{"type":"ping",}', "{'type':'ping'}", "NaN", '{"type":"ping"} x', b"\x00"],
)
def test_invalid_json(data):
    exc = refused(data)
    assert exc.code == ErrorCode.INVALID_FRAME
    assert exc.id is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"message","id":"m1","text":"\xff"}',
        b'{"type":"message","id":"m1","text":"\xc3"}',
        b'{"type":"message","id":"m1","text":"\xed\xa0\x80"}',  # encoded surrogate
        b"\xfe\xff",
    ],
)
def test_invalid_utf8_bytes(data):
    assert refused(data).code == ErrorCode.INVALID_FRAME


def test_lone_surrogates_are_refused():
    assert refused('{"type":"message","id":"m1","text":"\ud800"}').code == ErrorCode.INVALID_FRAME
    assert refused('{"type":"message","id":"m1","text":"\\ud800"}').code == ErrorCode.INVALID_FRAME


@pytest.mark.parametrize(
    "data",
    [
        {"id": "m1", "text": "hi"},
        {"type": None, "id": "m1"},
        {"type": 1, "id": "m1"},
        {"type": ["message"], "id": "m1"},
        {"type": "nope", "id": "m1"},
        {"type": "Message", "id": "m1", "text": "hi"},
        {"type": "pong", "id": "m1"},  # a server frame
        {"type": "ready", "id": "m1"},
        {"type": "", "id": "m1"},
    ],
)
def test_missing_or_unknown_type(data):
    exc = refused(orjson.dumps(data))
    assert exc.code == ErrorCode.INVALID_FRAME
    assert exc.id == "m1"  # the id is carried even when the type is wrong
    assert "type" in exc.message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "auth"}, "token"),
        ({"type": "message", "text": "hi"}, "id"),
        ({"type": "message", "id": "m1"}, "text"),
        ({"type": "cancel"}, "id"),
        ({"type": "resume", "after_seq": 0}, "id"),
        ({"type": "resume", "id": "m1"}, "after_seq"),
    ],
)
def test_missing_fields(data, field):
    exc = refused(orjson.dumps(data))
    assert exc.code == ErrorCode.INVALID_FRAME
    assert f"'{field}'" in exc.message
    assert exc.id == data.get("id")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "auth", "token": 1}, "token"),
        ({"type": "auth", "token": None}, "token"),
        ({"type": "auth", "token": ""}, "token"),
        ({"type": "message", "id": 1, "text": "hi"}, "id"),
        ({"type": "message", "id": True, "text": "hi"}, "id"),
        ({"type": "message", "id": None, "text": "hi"}, "id"),
        ({"type": "message", "id": ["m1"], "text": "hi"}, "id"),
        ({"type": "message", "id": "m1", "text": 5}, "text"),
        ({"type": "message", "id": "m1", "text": None}, "text"),
        ({"type": "message", "id": "m1", "text": ["hi"]}, "text"),
        ({"type": "message", "id": "m1", "text": {"t": "hi"}}, "text"),
        ({"type": "cancel", "id": 5}, "id"),
        ({"type": "resume", "id": "m1", "after_seq": True}, "after_seq"),
        ({"type": "resume", "id": "m1", "after_seq": False}, "after_seq"),
        ({"type": "resume", "id": "m1", "after_seq": 1.0}, "after_seq"),
        ({"type": "resume", "id": "m1", "after_seq": "1"}, "after_seq"),
        ({"type": "resume", "id": "m1", "after_seq": None}, "after_seq"),
        ({"type": "resume", "id": "m1", "after_seq": -2}, "after_seq"),
        ({"type": "resume", "id": "m1", "after_seq": 2**63}, "after_seq"),
        ({"type": "resume", "id": "m1", "after_seq": 2**64 - 1}, "after_seq"),
    ],
)
def test_wrong_field_types(data, field):
    exc = refused(orjson.dumps(data))
    assert exc.code == ErrorCode.INVALID_FRAME
    assert f"'{field}'" in exc.message


def test_after_seq_range():
    assert decode('{"type":"resume","id":"m","after_seq":-1}') == Resume("m", -1)
    assert decode(f'{{"type":"resume","id":"m","after_seq":{2**63 - 1}}}').after_seq == 2**63 - 1
    # A float that is too big for an integer is still not an integer.
    assert refused('{"type":"resume","id":"m","after_seq":1e30}').code == ErrorCode.INVALID_FRAME


@pytest.mark.parametrize(
    ("id", "ok"),
    [
        ("", False),
        ("a", True),
        (THUMB, True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("é" * 64, True),  # 128 UTF-8 bytes, 64 code points
        (THUMB * 32, True),  # 64 code points
        (THUMB * 32 + "a", False),
        (FAMILY * 12 + "abcd", True),
        (FAMILY * 13, False),
    ],
)
@pytest.mark.parametrize("kind", ["message", "cancel", "resume"])
def test_id_length_counts_code_points(id, ok, kind):
    data = orjson.dumps({"type": kind, "id": id, "text": "hi", "after_seq": -1})
    if ok:
        assert decode(data).id == id
    else:
        exc = refused(data)
        assert exc.code == ErrorCode.INVALID_FRAME
        assert exc.id is None  # not a valid id, so not carried
        assert "'id'" in exc.message


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "a" * MAX_TEXT_CHARS,
        THUMB * (MAX_TEXT_CHARS // 2),
        FAMILY * (MAX_TEXT_CHARS // 5),
        "\U0001f600" * MAX_TEXT_CHARS,  # 16000 UTF-8 bytes
        " ",
        "\n",
    ],
)
def test_text_lengths_accepted(text):
    assert decode(message(text=text)) == Message("m1", text)


@pytest.mark.parametrize(
    "text",
    [
        "a" * (MAX_TEXT_CHARS + 1),
        THUMB * (MAX_TEXT_CHARS // 2) + "a",
        FAMILY * (MAX_TEXT_CHARS // 5 + 1),
        "\U0001f600" * (MAX_TEXT_CHARS + 1),
        "a" * 10 * MAX_TEXT_CHARS,
    ],
)
def test_text_too_large_keeps_id(text):
    exc = refused(message(text=text))
    assert exc.code == ErrorCode.TOO_LARGE
    assert exc.close_code is None  # answered with an error; the connection stays open
    assert exc.id == "m1"
    assert "'text'" in exc.message


def test_empty_text_is_invalid_not_too_large():
    exc = refused(message(text=""))
    assert exc.code == ErrorCode.INVALID_FRAME
    assert exc.id == "m1"


@pytest.mark.parametrize(
    ("data", "field", "id"),
    [
        (message(text="a\x00b"), "text", "m1"),
        (message(text="\x00"), "text", "m1"),
        (message(id="m\x00"), "id", None),
        (orjson.dumps({"type": "cancel", "id": "\x00"}), "id", None),
        (orjson.dumps({"type": "resume", "id": "a\x00", "after_seq": 0}), "id", None),
        (orjson.dumps({"type": "auth", "token": "abc\x00"}), "token", None),
        (b'{"type":"message","id":"m1","text":"a\\u0000"}', "text", "m1"),
    ],
)
def test_nul_is_refused(data, field, id):
    exc = refused(data)
    assert exc.code == ErrorCode.INVALID_FRAME
    assert f"'{field}'" in exc.message
    assert "NUL" in exc.message
    assert exc.id == id


def test_other_control_characters_are_allowed():
    assert decode(message(text="a\tb\x01\x7f")).text == "a\tb\x01\x7f"


def test_frame_size_limit_in_bytes():
    head = b'{"type":"ping","pad":"'
    exact = head + b"x" * (MAX_FRAME_BYTES - len(head) - 2) + b'"}'
    assert len(exact) == MAX_FRAME_BYTES
    assert decode(exact) == Ping()
    assert decode(exact.decode()) == Ping()
    over = head + b"x" * (MAX_FRAME_BYTES - len(head) - 1) + b'"}'
    for data in (over, over.decode()):
        exc = refused(data)
        assert exc.code == ErrorCode.TOO_LARGE
        assert exc.close_code == CloseCode.TOO_LARGE
        assert exc.id is None


def test_frame_size_counts_utf8_bytes_of_str():
    # 20,000 code points but 80,000 UTF-8 bytes.
    data = '{"type":"ping","pad":"' + "\U0001f600" * 20_000 + '"}'
    assert len(data) < MAX_FRAME_BYTES
    assert refused(data).code == ErrorCode.TOO_LARGE


def test_oversize_frame_is_refused_before_parsing():
    assert refused(b"x" * (MAX_FRAME_BYTES + 1)).code == ErrorCode.TOO_LARGE


def test_duplicate_keys_last_wins():
    assert decode('{"type":"message","id":"a","text":"1","text":"2"}') == Message("a", "2")


# --- decode_server(): what the server sends ----------------------------------


def test_server_unknown_fields_and_values_are_kept():
    frame = decode_server(
        '{"type":"error","id":null,"code":"new_code","message":"m","extra":1,"retry_after":null}'
    )
    assert frame == Error(None, "new_code", "m")
    end = decode_server('{"type":"end","id":"a","message_id":1,"text":"","finish_reason":"length"}')
    assert end.finish_reason == "length"
    assert isinstance(decode_server(encode(End("a", 1, "", "stop"))).finish_reason, FinishReason)
    assert decode_server('{"type":"pong","x":[1]}') == Pong()


def test_server_known_codes_become_enums():
    frame = decode_server('{"type":"error","id":"a","code":"too_large","message":"m"}')
    assert frame.code is ErrorCode.TOO_LARGE


def test_server_integer_score_is_a_float():
    start = decode_server('{"type":"start","id":"a","sources":[{"id":"1","topic":"t","score":1}]}')
    assert start.sources[0].score == 1.0
    assert isinstance(start.sources[0].score, float)


def test_server_ready_without_pending():
    ready = decode_server('{"type":"ready","protocol":1,"user":{"id":3,"email":"e"}}')
    assert ready == Ready(3, "e")


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[]",
        '{"type":"message","id":"a","text":"hi"}',  # a client message, not an echo
        '{"type":"ping"}',
        '{"type":"auth","token":"t"}',
        '{"type":"unknown"}',
        '{"type":7}',
        '{"id":"a"}',
        '{"type":"ack","id":"a","message_id":"1","timestamp":"t"}',
        '{"type":"ack","id":"a","message_id":true,"timestamp":"t"}',
        '{"type":"ack","id":"a","timestamp":"t"}',
        '{"type":"token","id":"a","seq":1.0,"text":"x"}',
        '{"type":"start","id":"a","sources":[1]}',
        '{"type":"start","id":"a","sources":{}}',
        '{"type":"start","id":"a","sources":[{"id":1,"topic":"t","score":1}]}',
        '{"type":"start","id":"a","sources":[{"id":"1","topic":"t","score":true}]}',
        '{"type":"ready","protocol":1,"user":[],"pending":[]}',
        '{"type":"ready","user":{"id":1,"email":"e"},"pending":[]}',
        '{"type":"ready","protocol":1,"user":{"id":1,"email":"e"},"pending":[{"id":"a"}]}',
        '{"type":"error","id":1,"code":"internal","message":"m"}',
        '{"type":"error","id":null,"code":"rate_limited","message":"m","retry_after":"1"}',
        '{"type":"end","id":"a","message_id":1,"text":"x"}',
    ],
)
def test_server_bad_frames(data):
    with pytest.raises(ProtocolError) as info:
        decode_server(data)
    assert info.value.code == ErrorCode.INVALID_FRAME


# --- timestamps ----------------------------------------------------------------


def test_format_timestamp():
    dt = datetime(2026, 11, 26, 1, 2, 3, 123456, tzinfo=UTC)
    assert format_timestamp(dt) == TS
    paris = timezone(timedelta(hours=1))
    assert format_timestamp(dt.astimezone(paris)) == TS
    assert format_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"
    assert parse_timestamp(TS) == dt
    assert parse_timestamp("2026-11-26T02:02:03.123456+01:00") == dt


def test_format_timestamp_refuses_naive():
    with pytest.raises(ValueError, match="aware"):
        format_timestamp(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        parse_timestamp("2026-01-01T00:00:00")


# --- properties ----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["auth", "message", "cancel", "resume", "ping", "pong", "x"])},
    optional={
        "id": json_values | st.text(max_size=70),
        "text": json_values | st.text(max_size=4010),
        "token": json_values,
        "after_seq": json_values,
    },
)


def decodes_or_refuses(data):
    try:
        frame = decode(data)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.message
        assert exc.id is None or 1 <= len(exc.id) <= MAX_ID_CHARS
        return None
    assert isinstance(frame, Auth | Message | Cancel | Resume | Ping)
    # Whatever decode accepts, it accepts again after encoding.
    assert decode(encode(frame)) == frame
    return frame


@given(json_values)
def test_any_json_value_decodes_or_refuses(value):
    decodes_or_refuses(orjson.dumps(value))


@given(frame_like)
def test_any_frame_like_object_decodes_or_refuses(value):
    frame = decodes_or_refuses(orjson.dumps(value))
    if frame is not None and value["type"] == "message":
        assert 1 <= len(frame.text) <= MAX_TEXT_CHARS
        assert "\x00" not in frame.text + frame.id


@given(st.text(max_size=200))
def test_any_text_decodes_or_refuses(text):
    decodes_or_refuses(text)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_refuse(data):
    decodes_or_refuses(data)


@given(st.binary(max_size=200))
def test_any_bytes_decode_server_or_refuse(data):
    try:
        decode_server(data)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_FRAME


ids = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1, max_size=64)
texts = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), min_size=1, max_size=300)
any_text = st.text(st.characters(codec="utf-8"), max_size=300)
ints = st.integers(min_value=0, max_value=2**63 - 1)
scores = st.floats(allow_nan=False, allow_infinity=False)
client_frames = st.one_of(
    st.builds(Auth, texts),
    st.builds(Message, ids, texts),
    st.builds(Cancel, ids),
    st.builds(Resume, ids, st.integers(min_value=-1, max_value=2**63 - 1)),
    st.builds(Ping),
)
server_frames = st.one_of(
    st.builds(
        Ready, ints, any_text, st.lists(st.builds(Pending, ids, ints), max_size=3).map(tuple)
    ),
    st.builds(Ack, ids, ints, any_text),
    st.builds(
        Start, ids, st.lists(st.builds(Source, any_text, any_text, scores), max_size=5).map(tuple)
    ),
    st.builds(Token, ids, ints, any_text),
    st.builds(End, ids, ints, any_text, st.sampled_from(FinishReason)),
    st.builds(Error, st.none() | ids, st.sampled_from(ErrorCode), any_text, st.none() | scores),
    st.builds(Pong),
    st.builds(Echo, ids, ints, texts, any_text),
)


@given(client_frames)
def test_valid_client_frames_round_trip(frame):
    assert decode(encode(frame)) == frame


@given(server_frames)
def test_valid_server_frames_round_trip(frame):
    assert decode_server(encode(frame)) == frame
    assert decode_server(encode_bytes(frame)) == frame
