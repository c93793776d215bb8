"""The client's frame routing and reply streams, without a socket."""

import asyncio

import pytest

from protocol import (
    Ack,
    Echo,
    End,
    Error,
    ErrorCode,
    FinishReason,
    Pong,
    ReplyError,
    ServerError,
    Source,
    Start,
    Token,
)
from protocol.client import FINISHED_KEPT, FrameRouter, ReplyStream

TS = "2026-11-26T01:02:03.123456Z"


def reply_frames(id, text="Hello", reason=FinishReason.STOP):
    return [
        Start(id, (Source("1", "t", 0.5),)),
        *(Token(id, seq, piece) for seq, piece in enumerate(text)),
        End(id, 2, text, reason),
    ]


async def collect(stream):
    return [frame async for frame in stream]


def drain(queue):
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_ack_then_reply_is_buffered_for_its_stream():
    router = FrameRouter()
    ack = router.expect_ack("m1")
    frames = reply_frames("m1")
    for frame in [Ack("m1", 1, TS), *frames]:
        router.dispatch(frame)
    assert await ack == Ack("m1", 1, TS)
    stream = ReplyStream("m1", router.follow("m1"))
    assert await collect(stream) == frames
    assert stream.end == frames[-1]
    assert drain(router.other) == []
    assert router.replies == {}


async def test_interleaved_replies_and_other_tabs():
    router = FrameRouter()
    a, b = router.expect_ack("a"), router.expect_ack("b")
    echo = Echo("c", 5, "from another tab", TS)
    fa, fb, fc = reply_frames("a", "xy"), reply_frames("b", "pq"), reply_frames("c", "z")
    router.dispatch(Ack("a", 1, TS))
    router.dispatch(Ack("b", 2, TS))
    router.dispatch(echo)
    for frames in zip(fa, fb, fc, strict=False):
        for frame in frames:
            router.dispatch(frame)
    for frame in fa[len(fc) :] + fb[len(fc) :]:
        router.dispatch(frame)
    await a, await b
    assert await collect(ReplyStream("b", router.follow("b"))) == fb
    assert await collect(ReplyStream("a", router.follow("a"))) == fa
    assert drain(router.other) == [echo, *fc]


async def test_error_before_ack_is_a_refusal():
    router = FrameRouter()
    ack = router.expect_ack("m1")
    error = Error("m1", ErrorCode.RATE_LIMITED, "slow down", 3.0)
    router.dispatch(error)
    with pytest.raises(ServerError) as info:
        await ack
    assert info.value.frame == error
    assert info.value.retry_after == 3.0
    assert "m1" not in router.replies
    # A later frame for that id is not claimed by anyone.
    router.dispatch(Token("m1", 0, "x"))
    assert drain(router.other) == [Token("m1", 0, "x")]


async def test_failed_reply_yields_end_then_raises():
    router = FrameRouter()
    ack = router.expect_ack("m1")
    error = Error("m1", ErrorCode.UPSTREAM_ERROR, "the LLM failed")
    end = End("m1", 2, "He", FinishReason.ERROR)
    for frame in [Ack("m1", 1, TS), Start("m1"), Token("m1", 0, "He"), error, end]:
        router.dispatch(frame)
    await ack
    stream = ReplyStream("m1", router.follow("m1"))
    seen = []
    with pytest.raises(ReplyError) as info:
        async for frame in stream:
            seen.append(frame)
    assert seen == [Start("m1"), Token("m1", 0, "He"), end]
    assert (info.value.frame, info.value.end) == (error, end)
    # Once raised, the stream is over.
    assert await collect(stream) == []


async def test_failure_after_ack_but_before_start_still_waits_for_end():
    router = FrameRouter()
    ack = router.expect_ack("m1")
    error = Error("m1", ErrorCode.UNAVAILABLE, "database away")
    end = End("m1", 2, "", FinishReason.ERROR)
    for frame in [Ack("m1", 1, TS), error, end]:
        router.dispatch(frame)
    await ack
    stream = ReplyStream("m1", router.follow("m1"))
    assert await anext(stream) == end
    with pytest.raises(ReplyError) as info:
        await anext(stream)
    assert info.value.end == end


async def test_refused_resume_raises_at_once():
    router = FrameRouter()
    stream = ReplyStream("old", router.follow("old", finished=False))
    router.dispatch(Error("old", ErrorCode.UNKNOWN_MESSAGE, "unknown message"))
    with pytest.raises(ReplyError) as info:
        await anext(stream)
    assert info.value.code == ErrorCode.UNKNOWN_MESSAGE
    assert info.value.end is None


async def test_text_of_a_reply():
    router = FrameRouter()
    stream = ReplyStream("m1", router.follow("m1"))
    for frame in reply_frames("m1", "abc"):
        router.dispatch(frame)
    assert await stream.text() == "abc"


async def test_finished_replies_are_kept_until_read_but_bounded():
    router = FrameRouter()
    ids = [f"m{i}" for i in range(FINISHED_KEPT + 5)]
    for id in ids:
        router.follow(id)
        for frame in reply_frames(id, "x"):
            router.dispatch(frame)
    assert list(router.finished) == ids[5:]
    assert await collect(ReplyStream(ids[-1], router.follow(ids[-1]))) == reply_frames(ids[-1], "x")
    # Read once: a later call follows a new reply.
    assert ids[-1] not in router.finished


async def test_pongs_resolve_in_order_and_skip_abandoned_waits():
    router = FrameRouter()
    first, second, third = router.expect_pong(), router.expect_pong(), router.expect_pong()
    first.cancel()  # its wait timed out
    router.dispatch(Pong())
    assert second.done() and not third.done()
    router.dispatch(Pong())
    assert third.done()
    router.dispatch(Pong())  # unsolicited
    assert drain(router.other) == [Pong()]


async def test_unclaimed_frames_go_to_the_callback():
    seen = []
    router = FrameRouter(on_frame=seen.append)
    frames = [
        Error(None, ErrorCode.TOKEN_EXPIRED, "renew"),
        Echo("x", 1, "hi", TS),
        Ack("y", 2, TS),
    ]
    for frame in frames:
        router.dispatch(frame)
    assert seen == frames
    assert router.other.empty()


async def test_backlog_drops_the_oldest():
    router = FrameRouter(backlog=2)
    for seq in range(5):
        router.dispatch(Token("other", seq, "x"))
    assert [frame.seq for frame in drain(router.other)] == [3, 4]
    assert router.dropped == 3


async def test_close_wakes_every_waiter():
    router = FrameRouter()
    ack, pong = router.expect_ack("m1"), router.expect_pong()
    stream = ReplyStream("m2", router.follow("m2"))
    router.dispatch(Start("m2"))
    closed = ConnectionError("gone")
    router.close(closed)
    for future in (ack, pong):
        with pytest.raises(ConnectionError):
            await future
    assert await anext(stream) == Start("m2")
    with pytest.raises(ConnectionError):
        await anext(stream)
    with pytest.raises(ConnectionError):
        router.expect_ack("m3")
    with pytest.raises(ConnectionError):
        await anext(ReplyStream("m4", router.follow("m4")))


async def test_forgotten_ack_stops_following():
    router = FrameRouter()
    router.expect_ack("m1")
    router.forget_ack("m1")
    router.dispatch(Ack("m1", 1, TS))
    assert "m1" not in router.replies
    assert drain(router.other) == [Ack("m1", 1, TS)]
    with pytest.raises(ValueError, match="already waiting"):
        router.expect_ack("m2")
        router.expect_ack("m2")


async def test_frame_timeout():
    stream = ReplyStream("m1", FrameRouter().follow("m1"), frame_timeout=0.01)
    with pytest.raises(asyncio.TimeoutError):
        await anext(stream)
