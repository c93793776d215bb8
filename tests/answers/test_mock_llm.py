"""The mock LLM: deterministic answers from the best hit, exact token joins, the delay."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.answers.knowledge import Passage
from server.answers.llm.base import LLM
from server.answers.llm.mock import NO_INFORMATION, MockLLM, answer_text, split_tokens
from server.answers.retriever import Hit

BEST = Hit(Passage("widget", "widget", "Embedding the widget", "Add  one tag.\nThat is all. "), 3.2)
OTHER = Hit(Passage("other", "other", "Something else", "Not this one."), 1.0)


async def collect(llm: MockLLM, hits: list[Hit]) -> list[str]:
    return [piece async for piece in llm.stream("how do I embed it?", hits)]


def test_mock_is_an_llm() -> None:
    assert isinstance(MockLLM(), LLM)


async def test_answers_from_the_best_passage_naming_its_topic() -> None:
    tokens = await collect(MockLLM(), [BEST, OTHER])
    expected = "From our knowledge base on “Embedding the widget”: Add  one tag.\nThat is all. "
    assert "".join(tokens) == expected == answer_text([BEST, OTHER])
    assert "Not this one" not in "".join(tokens)


async def test_tokens_are_words_with_their_spacing() -> None:
    tokens = await collect(MockLLM(), [BEST])
    assert tokens[:3] == ["From ", "our ", "knowledge "]
    assert "Add  " in tokens and "tag.\n" in tokens
    assert all(t.strip() for t in tokens)  # no whitespace-only tokens in this answer


@pytest.mark.parametrize("text", ["", "  lead", "a b  c\n\td ", "one", "\n"])
def test_split_tokens_joins_back_exactly(text: str) -> None:
    assert "".join(split_tokens(text)) == text


async def test_nothing_matched_says_so_politely() -> None:
    tokens = await collect(MockLLM(), [])
    assert "".join(tokens) == NO_INFORMATION
    assert "no information" in NO_INFORMATION


async def test_deterministic() -> None:
    llm = MockLLM()
    assert await collect(llm, [BEST]) == await collect(llm, [BEST])
    assert await collect(MockLLM(delay_ms=1), [BEST]) == await collect(llm, [BEST])


async def test_delay_zero_does_not_sleep_and_delay_spaces_tokens() -> None:
    long = Hit(Passage("l", "l", "Long", " ".join(["word"] * 2000)), 2.0)
    start = time.perf_counter()
    tokens = await collect(MockLLM(delay_ms=0), [long])
    assert len(tokens) > 2000
    assert time.perf_counter() - start < 0.5

    start = time.perf_counter()
    tokens = await collect(MockLLM(delay_ms=20), [BEST])
    # n tokens: n - 1 gaps of at least 20 ms each
    assert time.perf_counter() - start >= (len(tokens) - 1) * 0.02 * 0.9


async def test_cancelling_the_consumer_stops_the_stream() -> None:
    seen: list[str] = []

    async def consume() -> None:
        async for piece in MockLLM(delay_ms=1000).stream("q", [BEST]):
            seen.append(piece)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["From "]


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError):
        MockLLM(delay_ms=-1)
