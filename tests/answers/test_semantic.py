"""Hybrid retrieval: the WordPiece tokenizer, the real MiniLM model, fusion, the pipeline."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from server.answers.knowledge import (
    DEFAULT_KNOWLEDGE_PATH,
    Document,
    load_documents,
    split_passages,
)
from server.answers.llm.mock import MockLLM
from server.answers.pipeline import AnswerPipeline
from server.answers.retriever import Index
from server.answers.semantic import (
    Embedder,
    HybridIndex,
    WordPiece,
    default_model_path,
    load_embedder,
)
from server.app import create_app
from server.settings import Settings, SettingsError
from tests.accounts import signup


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    found = load_embedder()
    assert found is not None, "the semantic extra is part of the test install"
    return found


@pytest.fixture(scope="module")
def shipped(embedder: Embedder) -> HybridIndex:
    passages = split_passages(load_documents(DEFAULT_KNOWLEDGE_PATH))
    return HybridIndex.build(Index.build(passages), embedder.embed)


def search(index: HybridIndex, embedder: Embedder, question: str, k: int = 5) -> list[str]:
    return [h.passage.doc_id for h in index.search(question, embedder.embed([question])[0], k)]


# --- the tokenizer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        # Reference ids from the `tokenizers` package with the model's tokenizer.json.
        (
            "How do I embed the widget?",
            [101, 2129, 2079, 1045, 7861, 8270, 1996, 15536, 24291, 1029, 102],
        ),
        (
            "Beyoncé’s café, naïve—3.5% of U.S. e-mail",
            [
                101,
                20773,
                1521,
                1055,
                7668,
                1010,
                15743,
                1517,
                1017,
                1012,
                1019,
                1003,
                1997,
                1057,
                1012,
                1055,
                1012,
                1041,
                1011,
                5653,
                102,
            ],
        ),
        ("東京 tower", [101, 1879, 1755, 3578, 102]),
        ("unaffordable snowboarding", [101, 14477, 4246, 8551, 3085, 4586, 21172, 102]),
        ("", [101, 102]),
    ],
)
def test_wordpiece_matches_the_reference_tokenizer(text: str, ids: list[int]) -> None:
    assert WordPiece().encode(text) == ids


def test_wordpiece_cuts_long_text_and_marks_unknown_words() -> None:
    tokenizer = WordPiece()
    ids = tokenizer.encode("word " * 1000, max_tokens=16)
    assert len(ids) == 16 and ids[0] == tokenizer.cls and ids[-1] == tokenizer.sep
    assert tokenizer.encode("x" * 101) == [tokenizer.cls, tokenizer.unk, tokenizer.sep]
    assert tokenizer.encode("a\x00b\u200b\tc") == tokenizer.encode("ab c")


# --- the model --------------------------------------------------------------------------------


def test_embeddings_are_unit_vectors_that_put_paraphrases_close(embedder: Embedder) -> None:
    texts = [
        "How often does the cleanup run?",
        "The purge job runs every night.",
        "Bananas are yellow.",
    ]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    # A batch gives each text the vector it gets alone (padding does not leak in).
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    assert np.allclose(alone, vectors, atol=1e-4)
    assert embedder.embed([]).shape == (0, 384)


def test_no_model_means_lexical_retrieval(tmp_path: Any) -> None:
    assert load_embedder(False) is None
    assert load_embedder(True, tmp_path / "missing.onnx") is None
    assert default_model_path() is not None


def test_the_setting_switches_it(make_settings: Any) -> None:
    assert Settings.from_env({}).semantic_retrieval is True
    assert Settings.from_env({"SEMANTIC_RETRIEVAL": "off"}).semantic_retrieval is False
    with pytest.raises(SettingsError, match="SEMANTIC_RETRIEVAL"):
        Settings.from_env({"SEMANTIC_RETRIEVAL": "sometimes"})


# --- fusion on the shipped knowledge base -----------------------------------------------------


def test_paraphrases_that_bm25_misses_are_found(shipped: HybridIndex, embedder: Embedder) -> None:
    question = "How do I change how often the cleanup runs?"
    assert shipped.lexical.search(question) == []
    assert search(shipped, embedder, question)[0] == "setting-purge-cron"


def test_exact_names_still_win(shipped: HybridIndex, embedder: Embedder) -> None:
    assert search(shipped, embedder, "PURGE_CRON")[0] == "setting-purge-cron"
    assert search(shipped, embedder, "nginx proxy_read_timeout")[0] == "deploy-nginx"


def test_off_topic_questions_find_nothing(shipped: HybridIndex, embedder: Embedder) -> None:
    for question in ["What is the weather like in Paris?", "Who won the Super Bowl in 2016?"]:
        assert search(shipped, embedder, question) == [], question


def test_a_question_bm25f_matches_well_is_ranked_mostly_by_bm25f(
    shipped: HybridIndex, embedder: Embedder
) -> None:
    # The same word-for-word question: with semantic_weight 0, a full lexical match
    # leaves the order to BM25F; a question sharing no word is ranked by meaning alone.
    question = "nginx proxy_read_timeout proxy_buffering"
    vector = embedder.embed([question])[0]
    lexical_first = dataclasses.replace(shipped, semantic_weight=0.0)
    top = shipped.lexical.search(question)[0].passage
    assert shipped.lexical.coverage(question, top) == pytest.approx(1.0)
    assert lexical_first.search(question, vector)[0].passage == top
    paraphrase = "How often does the cleanup happen?"
    assert lexical_first.lexical.search(paraphrase) == []
    hits = lexical_first.search(paraphrase, embedder.embed([paraphrase])[0])
    similarity = lexical_first.similarity(embedder.embed([paraphrase])[0])
    assert [h.score for h in hits] == sorted(
        (float(similarity[lexical_first.lexical.position(h.passage)]) for h in hits),
        reverse=True,
    )


def test_the_weight_moves_between_the_two(shipped: HybridIndex, embedder: Embedder) -> None:
    question = "How do I embed the widget on my site?"
    vector = embedder.embed([question])[0]
    lexical_only = dataclasses.replace(shipped, semantic_weight=0.0, min_similarity=2.0)
    assert [h.passage.id for h in lexical_only.search(question, vector)] == [
        h.passage.id for h in shipped.lexical.search(question)
    ]
    assert shipped.search(question, vector)[0].passage.doc_id == "embedding-widget"
    with pytest.raises(ValueError):
        HybridIndex.build(shipped.lexical, embedder.embed, semantic_weight=1.5)


# --- the pipeline ---------------------------------------------------------------------------------


class Counting:
    """The real embedder, noting what it is asked to embed and on which thread."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.on_main_thread: list[bool] = []

    def embed(self, texts: Sequence[str]) -> Any:
        self.texts.extend(texts)
        self.on_main_thread.append(threading.current_thread() is threading.main_thread())
        return self.inner.embed(texts)


DOCS = [
    Document("purge", "History purge", "Old messages are deleted by a nightly job."),
    Document("widget", "Embedding the widget", "Add one script tag to your page."),
    Document("tokens", "Access tokens", "Tokens expire after thirty minutes."),
]


async def test_pipeline_search_embeds_the_question_once_off_the_loop(embedder: Embedder) -> None:
    counting = Counting(embedder)
    pipeline = AnswerPipeline.from_documents(DOCS, MockLLM(), embedder=counting)  # type: ignore[arg-type]
    assert pipeline.semantic and isinstance(pipeline.index, HybridIndex)
    counting.texts.clear()
    counting.on_main_thread.clear()
    hits = await pipeline.search("When are old chats removed?")
    assert hits[0].passage.id == "purge"
    assert counting.texts == ["When are old chats removed?"]
    assert counting.on_main_thread == [False]
    # Asked again: the hits of the same index, without asking the embedding thread.
    assert await pipeline.search("When are old chats removed?") == hits
    assert pipeline.worker is not None and pipeline.worker.counts.questions == 1
    pipeline.close()
    # The synchronous lexical path is unchanged: no word in common, nothing found.
    assert pipeline.retrieve("When are old chats removed?") == []


async def test_rebuild_embeds_only_changed_passages_in_a_thread(embedder: Embedder) -> None:
    counting = Counting(embedder)
    pipeline = AnswerPipeline.from_documents(DOCS, MockLLM(), embedder=counting)  # type: ignore[arg-type]
    before = await pipeline.search("how long does a token last?")
    counting.texts.clear()
    counting.on_main_thread.clear()
    changed = [DOCS[0], DOCS[1], Document("tokens", "Access tokens", "Tokens last an hour.")]
    index = await pipeline.rebuild(changed)
    assert pipeline.index is index
    # The passage and its one sentence embed as the same text: once.
    assert counting.texts == ["Access tokens. Tokens last an hour."]
    assert counting.on_main_thread == [False]
    # The same question is ranked again on the new index (its vector is cached).
    hits = await pipeline.search("how long does a token last?")
    assert before[0].passage.text == "Tokens expire after thirty minutes."
    assert hits[0].passage.id == "tokens" and hits[0].passage.text == "Tokens last an hour."
    assert counting.texts == ["Access tokens. Tokens last an hour."]
    pipeline.close()


async def test_without_an_embedder_search_is_lexical() -> None:
    pipeline = AnswerPipeline.from_documents(DOCS, MockLLM())
    assert not pipeline.semantic
    assert await pipeline.search("nightly job") == pipeline.retrieve("nightly job")


async def test_the_server_answers_a_paraphrase_with_semantic_retrieval_on(
    aiohttp_client: Any, make_settings: Any
) -> None:
    client = await aiohttp_client(create_app(make_settings(semantic_retrieval=True)))
    _, token, _ = await signup(client)
    started = time.perf_counter()
    response = await client.post(
        "/api/v1/chat/chat",
        json={"message": "How do I change how often the cleanup runs?"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["sources"][0]["id"] == "setting-purge-cron"
    assert body["response"].endswith("(from “PURGE_CRON setting”)")
    assert len(body["response"].split()) <= 60
    assert time.perf_counter() - started < 10
