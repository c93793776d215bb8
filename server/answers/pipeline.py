"""The answer pipeline: the current index, retrieval, sources and the LLM stream.

The index is immutable and held by reference: ``rebuild`` builds a new one in a
worker thread while the old one keeps answering, then swaps it in with a single
assignment, so a question is always ranked against one whole index, old or new.

With an ``Embedder`` (``server/answers/semantic.py``) the index is a
``HybridIndex``: the passages are embedded while it is built (a passage whose
text did not change since the last build keeps its vector), and ``search``
embeds the question once. Both go through one ``EmbeddingWorker`` thread
(``server/answers/embedding_worker.py``: questions in micro-batches and first,
repeats from a cache), so the event loop never waits for the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

import aiohttp

from .embedding_worker import EmbeddingWorker
from .knowledge import DEFAULT_MAX_WORDS, Document, split_passages
from .llm.base import LLM
from .llm.mock import MockLLM
from .llm.openai import OpenAIChatLLM
from .retriever import Hit, Index
from .semantic import Embedder, HybridIndex

MAX_SOURCES = 5
HITS_CACHED = 1024  # questions whose lexical hits are kept
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


class AnswerPipeline:
    """Retrieves passages for a question and streams the LLM's answer from them.

    ``k`` is how many hits ``search`` returns (and the LLM sees); ``max_words``
    and ``index_params`` (see ``Index.build``) are used by ``rebuild``; with an
    ``embedder`` retrieval is hybrid (BM25F and sentence embeddings).
    """

    def __init__(
        self,
        index: Index | HybridIndex,
        llm: LLM,
        *,
        k: int = MAX_SOURCES,
        max_words: int = DEFAULT_MAX_WORDS,
        embedder: Embedder | None = None,
        **index_params: float,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self._index = index
        self._generation = 0
        # Popular questions come again and again: their hits (lexical, and hybrid apart),
        # for the index they were ranked on (a new index starts an empty cache).
        self._hits: dict[tuple[str, bool], tuple[Hit, ...]] = {}
        self._hits_of: object = index
        self.llm = llm
        self.k = k
        self.max_words = max_words
        self.embedder = embedder
        self.worker = EmbeddingWorker(embedder.embed) if embedder is not None else None
        self.index_params = index_params
        # Passage text -> its vector, for the passages of the newest build.
        self._vectors: dict[str, object] = {}

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        llm: LLM,
        *,
        k: int = MAX_SOURCES,
        max_words: int = DEFAULT_MAX_WORDS,
        embedder: Embedder | None = None,
        **index_params: float,
    ) -> AnswerPipeline:
        """Build the index now (synchronously: run it in a thread when the embedder
        is on) and the pipeline."""
        pipeline = cls(
            Index.build([]), llm, k=k, max_words=max_words, embedder=embedder, **index_params
        )
        pipeline._index = pipeline._build(list(documents))
        return pipeline

    @property
    def index(self) -> Index | HybridIndex:
        return self._index

    def close(self) -> None:
        """Stop the embedding thread (blocks for the run in progress, if any)."""
        if self.worker is not None:
            self.worker.close()

    @property
    def semantic(self) -> bool:
        """Whether retrieval is hybrid (the embedder is on)."""
        return self.embedder is not None

    def swap_index(self, index: Index | HybridIndex) -> None:
        """Replace the index at once; searches already running finish on the old one.

        Wins over any ``rebuild`` still in progress (that one's result is dropped).
        """
        self._generation += 1
        self._index = index

    async def rebuild(self, documents: Iterable[Document]) -> Index | HybridIndex:
        """Split and index ``documents`` in a worker thread, then swap the new index in.

        If another ``rebuild`` or ``swap_index`` started after this one, the newer one
        wins and this result is not installed. Returns the index built.
        """
        self._generation += 1
        generation = self._generation
        documents = list(documents)
        index = await asyncio.to_thread(self._build, documents)
        if generation == self._generation:
            self._index = index
        return index

    def _build(self, documents: list[Document]) -> Index | HybridIndex:
        lexical = Index.build(split_passages(documents, self.max_words), **self.index_params)
        if self.embedder is None:
            return lexical
        return HybridIndex.build(lexical, self._embed_passages)

    def _embed_passages(self, texts: list[str]) -> object:
        """Vectors for passage texts, reusing those of the last build (admin edits
        change one document: only its passages are embedded again)."""
        import numpy as np

        assert self.worker is not None
        known = self._vectors
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        fresh = dict(zip(missing, self.worker.embed(missing), strict=True)) if missing else {}
        vectors = {t: known[t] if t in known else fresh[t] for t in texts}
        self._vectors = vectors
        return np.stack([vectors[t] for t in texts])

    def retrieve(self, question: str) -> list[Hit]:
        """The best passages for ``question`` by BM25F alone (at most ``k``), best
        first; fast and synchronous. Replies use ``search``."""
        index = self._index
        hits = self._cached(index, question, False)
        if hits is None:
            lexical = index.lexical if isinstance(index, HybridIndex) else index
            hits = self._cache(index, question, False, lexical.search(question, self.k))
        return list(hits)

    async def search(self, question: str) -> list[Hit]:
        """The best passages for ``question`` (at most ``k``), best first: hybrid
        when the embedder is on (the question is embedded by the worker thread; a
        question asked before on the same index is not embedded again)."""
        index = self._index
        if not isinstance(index, HybridIndex) or self.worker is None:
            return self.retrieve(question)
        hits = self._cached(index, question, True)
        if hits is None:
            vector = await self.worker.vector(question)
            hits = self._cache(index, question, True, index.search(question, vector, self.k))
        return list(hits)

    def _cached(
        self, index: Index | HybridIndex, question: str, hybrid: bool
    ) -> tuple[Hit, ...] | None:
        if self._hits_of is not index:
            self._hits, self._hits_of = {}, index
        return self._hits.get((question, hybrid))

    def _cache(
        self, index: Index | HybridIndex, question: str, hybrid: bool, hits: list[Hit]
    ) -> tuple[Hit, ...]:
        """Keep ``hits`` if ``index`` is still the cache's (a swap may have come
        while the question was embedded)."""
        if self._hits_of is index:
            if len(self._hits) >= HITS_CACHED:
                del self._hits[next(iter(self._hits))]  # the oldest
            self._hits[(question, hybrid)] = tuple(hits)
        return tuple(hits)

    @staticmethod
    def sources(hits: Sequence[Hit]) -> list[dict[str, object]]:
        """The ``sources`` of a ``start`` frame: up to 5 ``{"id","topic","score"}``."""
        return [
            {"id": hit.passage.id, "topic": hit.passage.topic, "score": round(hit.score, 4)}
            for hit in hits[:MAX_SOURCES]
        ]

    @property
    def history_turns(self) -> int:
        """How many earlier turns of the conversation the LLM takes (0: none, the mock)."""
        return getattr(self.llm, "history_turns", 0)

    def stream(
        self, question: str, hits: Sequence[Hit], earlier: Sequence[tuple[bool, str]] = ()
    ) -> AsyncIterator[str]:
        """The LLM's answer in pieces. Close it (``contextlib.aclosing``) when stopping
        early, so a provider's HTTP response is released at once. ``earlier``: the
        conversation's turns before the question, ``(is_user_message, text)`` oldest
        first, for an LLM with ``history_turns``.

        Raises (while iterating):
            LLMError: the provider failed.
        """
        if earlier:
            return self.llm.stream(question, hits, earlier=earlier)  # type: ignore[call-arg]
        return self.llm.stream(question, hits)


def build_llm(
    openai_api_key: str | None,
    base_url: str | None = None,
    model: str | None = None,
    token_delay_ms: float = 0,
    session: aiohttp.ClientSession | None = None,
    *,
    timeout_s: float = 30,
    first_token_timeout_s: float = 60,
) -> LLM:
    """The mock when ``openai_api_key`` is unset, empty or ``"mock"``; else the
    OpenAI-compatible provider on ``session`` (required then), ``base_url`` and
    ``model`` (OpenAI's and gpt-4o-mini by default). ``token_delay_ms`` is the
    mock's delay between tokens."""
    key = (openai_api_key or "").strip()
    if not key or key.lower() == "mock":
        return MockLLM(delay_ms=token_delay_ms)
    if session is None:
        raise ValueError("an aiohttp ClientSession is needed for the OpenAI provider")
    return OpenAIChatLLM(
        session,
        key,
        base_url=base_url or DEFAULT_OPENAI_BASE_URL,
        model=model or DEFAULT_OPENAI_MODEL,
        timeout_s=timeout_s,
        first_token_timeout_s=first_token_timeout_s,
    )
