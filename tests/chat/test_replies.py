"""A `Reply` on its own: its frames, its followers and the state machine it obeys."""

import orjson
import pytest

from protocol import ErrorCode, FinishReason
from server.chat.replies import Reply, split_tokens
from server.chat.reply_state import ReplyState, ReplyStateError


class Sink:
    """A follower that keeps the frames it gets."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def push(self, frame: bytes) -> None:
        self.frames.append(orjson.loads(frame))

    def kinds(self) -> list[str]:
        return [f["type"] for f in self.frames]


async def test_followers_get_start_tokens_and_end_in_order():
    live, late = Sink(), Sink()
    reply = Reply(7, "m1", 11, "q", local=True, followers={live})
    reply.begin([{"id": "3", "topic": "T", "score": 1.0}])
    reply.add_tokens(["Hel", "lo"])
    reply.follow(late, 0)  # resumed after the first token
    reply.add_tokens(["!"])
    reply.store()
    reply.finish(12, FinishReason.STOP)
    assert live.kinds() == ["start", "token", "token", "token", "end"]
    assert [f["seq"] for f in live.frames if f["type"] == "token"] == [0, 1, 2]
    assert late.kinds() == ["start", "token", "token", "end"]
    assert [f["seq"] for f in late.frames if f["type"] == "token"] == [1, 2]
    assert (
        live.frames[-1]
        == late.frames[-1]
        == {
            "type": "end",
            "id": "m1",
            "message_id": 12,
            "text": "Hello!",
            "finish_reason": "stop",
        }
    )
    assert reply.state is ReplyState.ENDED and reply.done.is_set() and not reply.followers


async def test_a_follower_already_following_gets_nothing_twice():
    sink = Sink()
    reply = Reply(7, "m1", 11, "q", local=True, followers={sink})
    reply.begin([])
    reply.follow(sink, -1)
    assert sink.kinds() == ["start"]


async def test_an_ended_reply_that_never_started_still_replays_start_then_end():
    mirror = Reply(7, "m1", 11, "", local=False)
    mirror.finish(None, FinishReason.ERROR)  # a mirror whose start was never heard
    sink = Sink()
    mirror.follow(sink, -1)
    assert sink.kinds() == ["start", "end"]


async def test_a_failed_reply_sends_its_error_before_the_end():
    sink = Sink()
    reply = Reply(7, "m1", 11, "q", local=True, followers={sink})
    reply.begin([])
    reply.fail(ErrorCode.UPSTREAM_ERROR, "the LLM failed")
    reply.store()
    reply.finish(12, FinishReason.ERROR)
    assert sink.kinds() == ["start", "error", "end"]
    assert sink.frames[1]["code"] == "upstream_error"


async def test_steps_out_of_order_are_refused():
    reply = Reply(7, "m1", 11, "q", local=True)
    with pytest.raises(ReplyStateError):
        reply.add_tokens(["early"])
    reply.begin([])
    reply.store()
    with pytest.raises(ReplyStateError):
        reply.add_tokens(["late"])
    reply.finish(12, FinishReason.STOP)
    with pytest.raises(ReplyStateError):
        reply.finish(12, FinishReason.STOP)


def test_a_stored_reply_is_cut_back_into_its_tokens():
    assert split_tokens("Hello!", [3, 2, 1]) == ["Hel", "lo", "!"]
    assert split_tokens("Hello", None) == ["Hello"]
    assert split_tokens("", []) == []
