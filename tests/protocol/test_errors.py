import pytest

from protocol import (
    CloseCode,
    End,
    Error,
    ErrorCode,
    FinishReason,
    ProtocolError,
    ReplyError,
    ServerError,
)

# The contract's strings and numbers, written out so a renamed value fails here.
CONTRACT_CODES = {
    "invalid_frame",
    "unauthorized",
    "token_expired",
    "too_large",
    "rate_limited",
    "unknown_message",
    "id_conflict",
    "upstream_error",
    "unavailable",
    "internal",
}


def test_error_codes_are_the_contract_strings():
    assert {code.value for code in ErrorCode} >= CONTRACT_CODES
    assert ErrorCode.INVALID_FRAME == "invalid_frame"
    assert ErrorCode("rate_limited") is ErrorCode.RATE_LIMITED
    assert f"{ErrorCode.TOO_LARGE}" == "too_large"


def test_close_codes():
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "POLICY": 1008,
        "TOO_LARGE": 1009,
        "TRY_AGAIN_LATER": 1013,
        "AUTH_FAILED": 4401,
        "AUTH_TIMEOUT": 4408,
    }


def test_finish_reasons():
    assert [str(r) for r in FinishReason] == ["stop", "cancelled", "error"]


def test_protocol_error_attributes():
    exc = ProtocolError(ErrorCode.TOO_LARGE, "field 'text' is over 4000 characters", "m1")
    assert (exc.code, exc.id, exc.retry_after, exc.close_code) == (
        ErrorCode.TOO_LARGE,
        "m1",
        None,
        None,
    )
    assert str(exc) == "too_large: field 'text' is over 4000 characters"
    limited = ProtocolError(ErrorCode.RATE_LIMITED, "slow down", retry_after=2.5)
    assert (limited.id, limited.retry_after) == (None, 2.5)


def test_server_and_reply_errors_carry_the_frame():
    frame = Error("m1", ErrorCode.UPSTREAM_ERROR, "the LLM failed")
    end = End("m1", 12, "Hel", FinishReason.ERROR)
    exc = ReplyError(frame, end)
    assert isinstance(exc, ServerError)
    assert (exc.frame, exc.end, exc.code, exc.id) == (frame, end, ErrorCode.UPSTREAM_ERROR, "m1")
    assert str(exc) == "upstream_error: the LLM failed (message m1)"
    limited = ServerError(Error(None, ErrorCode.RATE_LIMITED, "slow", 4.0))
    assert limited.retry_after == 4.0
    assert str(limited) == "rate_limited: slow"
    with pytest.raises(ServerError):
        raise exc
