"""The OpenAI-compatible provider against a local stand-in that speaks the real protocol."""

from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing

import aiohttp
import pytest
from openai_standin import OpenAIStandIn

from server.answers.knowledge import Passage
from server.answers.llm.base import LLM, LLMError, build_prompt
from server.answers.llm.openai import OpenAIChatLLM, SSEDecoder
from server.answers.retriever import Hit

HITS = [
    Hit(Passage("purge", "purge", "History purge", "Messages older than 30 days are purged."), 5),
    Hit(Passage("kb#2", "kb", "Knowledge base", "Entries are split into passages."), 2.5),
]


def make_llm(session: aiohttp.ClientSession, url: str, **kwargs: float) -> OpenAIChatLLM:
    kwargs.setdefault("timeout_s", 2)
    kwargs.setdefault("first_token_timeout_s", 2)
    return OpenAIChatLLM(session, "sk-test", base_url=url, model="test-model", **kwargs)


async def collect(llm: OpenAIChatLLM, pieces: list[str] | None = None) -> list[str]:
    out = [] if pieces is None else pieces
    async with aclosing(llm.stream("How long is history kept?", HITS)) as stream:
        async for piece in stream:
            out.append(piece)
    return out


def test_provider_is_an_llm(http_session: aiohttp.ClientSession) -> None:
    assert isinstance(OpenAIChatLLM(http_session, "k"), LLM)


async def test_normal_stream(standin: OpenAIStandIn, http_session: aiohttp.ClientSession) -> None:
    standin.pieces = ["The ", "history ", "is kept ", "30 days", "."]
    assert await collect(make_llm(http_session, standin.url)) == standin.pieces


async def test_request_body_and_headers(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    await collect(make_llm(http_session, standin.url + "/"))  # a trailing slash is fine
    [request] = standin.requests
    assert request.headers["Authorization"] == "Bearer sk-test"
    body = request.body
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["messages"] == build_prompt("How long is history kept?", HITS)
    system, user = body["messages"]
    assert system["role"] == "system" and user == {
        "role": "user",
        "content": "How long is history kept?",
    }
    for hit in HITS:
        assert hit.passage.text in system["content"]
        assert hit.passage.topic in system["content"]
    assert "only" in system["content"]


def test_prompt_without_passages_says_nothing_matched() -> None:
    system, _ = build_prompt("anything?", [])
    assert "No passage" in system["content"]


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (401, None, r"refused the API key \(401\): something went wrong"),
        (403, None, r"refused the API key \(403\)"),
        (429, "7", r"rate limiting requests \(429\); retry in 7 s"),
        (429, None, r"rate limiting requests \(429\); retry later"),
        (500, None, r"failed \(500 Internal Server Error\)"),
        (503, None, r"failed \(503 Service Unavailable\)"),
        (404, None, r"rejected the request \(404\)"),
    ],
)
async def test_error_statuses(
    standin: OpenAIStandIn,
    http_session: aiohttp.ClientSession,
    status: int,
    retry_after: str | None,
    expected: str,
) -> None:
    standin.mode, standin.status, standin.retry_after = "status", status, retry_after
    with pytest.raises(LLMError, match=expected) as info:
        await collect(make_llm(http_session, standin.url))
    assert info.value.status == status


async def test_stream_cut_off_midway(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    standin.mode = "cut"
    got: list[str] = []
    with pytest.raises(LLMError, match="closed the stream before the answer was complete"):
        await collect(make_llm(http_session, standin.url), got)
    assert got == standin.pieces[:2]


async def test_malformed_event(standin: OpenAIStandIn, http_session: aiohttp.ClientSession) -> None:
    standin.mode = "malformed"
    with pytest.raises(LLMError, match="malformed event"):
        await collect(make_llm(http_session, standin.url))


async def test_server_that_never_answers_times_out(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    standin.mode = "hang"
    llm = make_llm(http_session, standin.url, first_token_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(LLMError, match=r"did not answer within 0.3 s"):
        await collect(llm)
    assert loop.time() - start < 1.5


async def test_stream_that_stalls_after_the_first_token_times_out(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    standin.mode = "stall"
    got: list[str] = []
    llm = make_llm(http_session, standin.url, timeout_s=0.3)
    with pytest.raises(LLMError, match=r"stopped answering \(no data for 0.3 s\)"):
        await collect(llm, got)
    assert got == standin.pieces[:1]


async def test_connection_refused(http_session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LLMError, match="could not connect to the language model service"):
        await collect(make_llm(http_session, f"http://127.0.0.1:{port}/v1"))


async def test_cancel_mid_stream_closes_the_connection(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    standin.mode = "slow"
    standin.pieces = [f"piece{n} " for n in range(100)]
    standin.piece_delay_s = 0.05
    got: list[str] = []
    two_pieces = asyncio.Event()

    async def consume() -> None:
        async with aclosing(make_llm(http_session, standin.url).stream("q", HITS)) as stream:
            async for piece in stream:
                got.append(piece)
                if len(got) == 2:
                    two_pieces.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two_pieces.wait(), timeout=2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The stand-in notices the closed connection on its next write.
    await asyncio.wait_for(standin.disconnected.wait(), timeout=2)
    assert len(got) < 10


async def test_early_aclose_closes_the_connection(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    standin.mode = "slow"
    standin.pieces = [f"piece{n} " for n in range(100)]
    standin.piece_delay_s = 0.02
    stream = make_llm(http_session, standin.url).stream("q", HITS)
    assert await anext(stream) == "piece0 "
    await stream.aclose()
    await asyncio.wait_for(standin.disconnected.wait(), timeout=2)


async def test_stream_ending_without_done_after_finish_reason_is_complete(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    standin.mode = "no-done"
    assert await collect(make_llm(http_session, standin.url)) == standin.pieces


async def test_non_streaming_json_answer_is_accepted(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    standin.mode = "json"
    assert "".join(await collect(make_llm(http_session, standin.url))) == "Hello, world!"


async def test_connection_is_reused_after_a_complete_stream(
    standin: OpenAIStandIn, http_session: aiohttp.ClientSession
) -> None:
    llm = make_llm(http_session, standin.url)
    for _ in range(3):
        assert "".join(await collect(llm)) == "Hello, world!"
    assert len(standin.requests) == 3


def test_sse_decoder() -> None:
    decoder = SSEDecoder()
    events = [
        decoder.feed(line)
        for line in [": comment\n", "event: x\n", "data: a\r\n", "data:b\n", "\n", "\n", "id: 1\n"]
    ]
    assert [e for e in events if e is not None] == ["a\nb"]
    assert decoder.feed("data: tail") is None
    assert decoder.flush() == "tail"
    assert decoder.flush() is None
