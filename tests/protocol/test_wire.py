"""The hot-path bytes of `protocol.wire` equal the general encoder's (and RFC 6455's)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from protocol import Source, Start, Token, decode_server, encode_bytes
from protocol.wire import ReplyFrames, text_frame_header

THUMB = "\U0001f44d\U0001f3fd"
IDS = ["m1", "3f2c6a7e-1b2c-4d5e-8f90-123456789abc", 'quote " and \\ back', THUMB, "\u2028x"]
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)


@pytest.mark.parametrize("id", IDS)
@given(seq=st.integers(0, 2**63 - 1), text=texts)
def test_a_token_frame_is_the_general_encoders(id, seq, text):
    assert ReplyFrames(id).token(seq, text) == encode_bytes(Token(id, seq, text))


@pytest.mark.parametrize("id", IDS)
def test_a_start_frame_is_the_general_encoders(id):
    sources = [
        {"id": "3", "topic": "Billing " + THUMB, "score": 0.91},
        {"id": "4#2", "topic": "x", "score": 1.5},
    ]
    expected = encode_bytes(Start(id, tuple(Source(**s) for s in sources)))
    assert ReplyFrames(id).start(sources) == expected
    assert ReplyFrames(id).start([]) == encode_bytes(Start(id))


def test_a_start_frame_from_the_database_decodes_to_the_same_frame():
    # jsonb gives the keys in its own order: other bytes, the same frame.
    stored = [{"id": "3", "score": 0.91, "topic": "Billing"}]
    assert decode_server(ReplyFrames("m1").start(stored)) == Start(
        "m1", (Source("3", "Billing", 0.91),)
    )


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_the_text_frame_header_is_rfc_6455s(size):
    payload = b"x" * size
    serialized = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame_header(size) + payload == serialized
