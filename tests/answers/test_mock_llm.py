"""The mock LLM: short extractive answers naming their topics, exact token joins, the delay."""

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
PURGE = Hit(
    Passage(
        "purge",
        "purge",
        "History purge",
        "Chat history is not kept forever. The purge runs every night at 03:00 UTC. "
        "Until then, every acknowledged message stays in the history, whatever happens. "
        "Operators may change the schedule with a setting.",
    ),
    4.0,
)


async def collect(llm: MockLLM, hits: list[Hit]) -> list[str]:
    return [piece async for piece in llm.stream("how do I embed it?", hits)]


def test_mock_is_an_llm() -> None:
    assert isinstance(MockLLM(), LLM)


async def test_answers_with_the_sentence_that_answers_then_its_topic() -> None:
    question = "When does the purge run?"
    answer = "".join([piece async for piece in MockLLM().stream(question, [PURGE, OTHER])])
    assert answer == "The purge runs every night at 03:00 UTC. (from “History purge”)"
    assert answer == answer_text(question, [PURGE, OTHER])
    assert "Not this one" not in answer


def test_two_sentences_from_two_passages_name_both_topics() -> None:
    nightly = Hit(Passage("p", "p", "History purge", "The purge schedule is nightly."), 4.0)
    cron = Hit(Passage("c", "c", "PURGE_CRON", "PURGE_CRON sets the purge schedule."), 3.9)
    assert answer_text("purge schedule", [nightly, cron]) == (
        "The purge schedule is nightly. PURGE_CRON sets the purge schedule."
        " (from “History purge” and “PURGE_CRON”)"
    )
    # Only the better one when the other passage is a poor second.
    weak = Hit(cron.passage, 0.5)
    assert answer_text("purge schedule", [nightly, weak]).endswith("(from “History purge”)")


def test_a_passage_found_by_meaning_alone_answers_with_its_first_sentence() -> None:
    # No word in common (the hybrid retriever finds such passages): its lead sentence.
    expected = "Add  one tag. (from “Embedding the widget”)"
    assert answer_text("how do I embed it?", [BEST]) == expected


async def test_tokens_are_words_with_their_spacing() -> None:
    tokens = await collect(MockLLM(), [BEST])
    # The knowledge base's own spacing is kept (Markdown line breaks survive).
    assert tokens == ["Add  ", "one ", "tag. ", "(from ", "“Embedding ", "the ", "widget”)"]
    assert "".join(tokens) == answer_text("how do I embed it?", [BEST])


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
    assert seen == ["Add  "]


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError):
        MockLLM(delay_ms=-1)
