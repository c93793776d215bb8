"""The answer pipeline: retrieval, sources, streaming, index swaps and the LLM factory."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from server.answers.knowledge import DEFAULT_KNOWLEDGE_PATH, Document, load_documents
from server.answers.llm.mock import NO_INFORMATION, MockLLM
from server.answers.llm.openai import OpenAIChatLLM
from server.answers.pipeline import AnswerPipeline, build_llm
from server.answers.retriever import Index

DOCS = [
    Document("widget", "Embedding the widget", "Add one script tag with data-server to the page."),
    Document("purge", "History purge", "Messages older than the retention days are purged."),
    Document("nginx", "Deploying behind nginx", "Proxy the WebSocket with upgrade headers."),
    Document("tokens", "Access tokens", "Tokens expire; refresh them before expiry."),
    Document("rates", "Rate limits", "Too many messages per minute get rate limited."),
]


@pytest.fixture
def pipeline() -> AnswerPipeline:
    return AnswerPipeline.from_documents(DOCS, MockLLM())


def test_retrieve_is_best_first_and_at_most_k(pipeline: AnswerPipeline) -> None:
    hits = pipeline.retrieve("how do I add the widget script to my page?")
    assert hits[0].passage.id == "widget"
    assert len(AnswerPipeline.from_documents(DOCS, MockLLM(), k=1).retrieve("widget purge")) == 1
    assert pipeline.retrieve("what is it?") == []


def test_sources_shape() -> None:
    long = Document(
        "long", "Long topic", " ".join(f"Sentence {n} about widgets." for n in range(90))
    )
    fillers = [Document(f"f{n}", f"Filler {n}", f"unrelated text number {n}") for n in range(6)]
    pipeline = AnswerPipeline.from_documents([long, *fillers], MockLLM(), k=10)
    hits = pipeline.retrieve("widgets")
    assert len(hits) >= 2
    sources = pipeline.sources(hits)
    assert len(sources) == min(5, len(hits))
    assert [s["id"] for s in sources] == [h.passage.id for h in hits[:5]]
    assert all(isinstance(s["id"], str) and s["id"].startswith("long#") for s in sources)
    assert all(s["topic"] == "Long topic" for s in sources)
    assert [s["score"] for s in sources] == [round(h.score, 4) for h in hits[:5]]
    assert pipeline.sources([]) == []


async def test_stream_answers_with_the_mock(pipeline: AnswerPipeline) -> None:
    hits = pipeline.retrieve("when are messages purged?")
    text = "".join([piece async for piece in pipeline.stream("when?", hits)])
    assert text == f"{DOCS[1].content} (from “History purge”)"
    nothing = "".join([piece async for piece in pipeline.stream("?", [])])
    assert nothing == NO_INFORMATION


def test_swap_index(pipeline: AnswerPipeline) -> None:
    new = Index.build([])
    old = pipeline.index
    assert pipeline.retrieve("widget")  # ranked on the old index (and kept for it)
    pipeline.swap_index(new)
    assert pipeline.index is new is not old
    assert pipeline.retrieve("widget") == []


def test_a_repeated_question_gets_the_same_hits_and_callers_cannot_change_them(
    pipeline: AnswerPipeline,
) -> None:
    first = pipeline.retrieve("how do I embed the widget?")
    assert first[0].passage.doc_id == "widget"
    first.clear()  # a caller's own list
    again = pipeline.retrieve("how do I embed the widget?")
    assert again == pipeline.index.search("how do I embed the widget?", pipeline.k) != []
    assert pipeline.retrieve("when are messages purged?")[0].passage.doc_id == "purge"


async def test_the_mock_answers_a_repeated_question_alike_and_another_differently(
    pipeline: AnswerPipeline,
) -> None:
    async def answer(question: str) -> str:
        hits = pipeline.retrieve(question)
        return "".join([piece async for piece in pipeline.stream(question, hits)])

    widget = await answer("how do I embed the widget?")
    assert widget == await answer("how do I embed the widget?")
    assert "script tag" in widget
    purge = await answer("when are messages purged?")
    assert purge != widget and "purged" in purge


async def test_rebuild_builds_in_a_thread_and_swaps(pipeline: AnswerPipeline) -> None:
    big = [
        Document(f"d{n}", f"Topic {n}", f"Document {n} speaks of item{n} and more words {n % 7}.")
        for n in range(4000)
    ]
    big.append(Document("zebra", "Zebras", "Zebras have stripes."))
    old = pipeline.index
    ticks = 0
    answered_by_old: list[str] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1
            if pipeline.index is old:
                answered_by_old.extend(h.passage.id for h in pipeline.retrieve("widget"))

    task = asyncio.create_task(ticker())
    try:
        new = await pipeline.rebuild(big)
    finally:
        task.cancel()
    assert pipeline.index is new
    assert len(new) == 4001
    assert ticks >= 5  # the event loop kept running while the index was built
    assert "widget" in answered_by_old
    assert [h.passage.id for h in pipeline.retrieve("zebras stripes")] == ["zebra"]


async def test_a_newer_swap_wins_over_a_slower_rebuild(pipeline: AnswerPipeline) -> None:
    rebuild = asyncio.create_task(pipeline.rebuild(DOCS[:1]))
    await asyncio.sleep(0)  # the rebuild has started
    newest = Index.build([])
    pipeline.swap_index(newest)
    built = await rebuild
    assert len(built) == 1
    assert pipeline.index is newest


def test_default_knowledge_base_answers_real_questions() -> None:
    pipeline = AnswerPipeline.from_documents(load_documents(DEFAULT_KNOWLEDGE_PATH), MockLLM())
    cases = {
        "How do I embed the chat widget on my website?": "embedding-widget",
        "How long are messages kept before they are purged?": "setting-retention",
        "Which signing algorithms can I use for tokens?": "setting-algorithm",
        "How do I resume a reply after reconnecting?": "ws-cancel-resume",
        "nginx websocket proxy configuration": "deploy-nginx",
    }
    for question, doc_id in cases.items():
        assert pipeline.retrieve(question)[0].passage.doc_id == doc_id, question
    assert pipeline.retrieve("what's the weather like in Paris?") == []


@pytest.mark.parametrize("key", [None, "", "mock", "MOCK", "  mock  "])
def test_build_llm_gives_the_mock_without_a_key(key: str | None) -> None:
    llm = build_llm(key, token_delay_ms=15)
    assert isinstance(llm, MockLLM)
    assert llm.delay_ms == 15


async def test_build_llm_gives_the_openai_provider_with_a_key(
    http_session: aiohttp.ClientSession,
) -> None:
    llm = build_llm("sk-real", "http://127.0.0.1:11434/v1/", "llama3", 0, http_session)
    assert isinstance(llm, OpenAIChatLLM)
    assert (llm.url, llm.model, llm.api_key) == (
        "http://127.0.0.1:11434/v1/chat/completions",
        "llama3",
        "sk-real",
    )
    default = build_llm("sk-real", session=http_session)
    assert isinstance(default, OpenAIChatLLM)
    assert default.url == "https://api.openai.com/v1/chat/completions"
    assert default.model == "gpt-4o-mini"
    with pytest.raises(ValueError, match="ClientSession"):
        build_llm("sk-real")
