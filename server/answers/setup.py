"""The answer pipeline inside the app: the knowledge base from PostgreSQL, kept current.

At start-up the collection named after ``KNOWLEDGE_PATH``'s file is seeded from
that file if it never was, or if the file changed since (its SHA-256 differs),
then loaded and indexed; from then on the admin API
(``server/answers/admin.py``) edits it and ``LiveKnowledge`` re-indexes every
instance on each change.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from server import keys
from server.answers import store
from server.answers.knowledge import Document, load_documents
from server.answers.pipeline import AnswerPipeline, build_llm
from server.answers.semantic import load_embedder
from server.settings import SettingsError

log = logging.getLogger(__name__)

# The wait for a provider's first piece of text, in units of LLM_TIMEOUT_S (the wait
# between later reads): a local model may need a while to load. 30 s → 60 s by default.
FIRST_TOKEN_TIMEOUT_FACTOR = 2.0


async def answers_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = app[keys.POOL]
    path = settings.knowledge_path
    collection = store.collection_name(path)

    def read_file() -> list[Document]:
        try:
            return load_documents(path)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"KNOWLEDGE_PATH: {exc}") from None

    try:
        fingerprint = hashlib.sha256(await asyncio.to_thread(Path(path).read_bytes)).hexdigest()
    except OSError as exc:
        raise SettingsError(f"KNOWLEDGE_PATH: {exc}") from None
    outcome = await store.seed(pool, collection, read_file, str(path), fingerprint)
    if outcome == "kept":
        log.info(
            "knowledge base %r is in the database and %s is unchanged (edit the documents"
            " with the admin API)",
            collection,
            path,
        )
    else:
        log.info("knowledge base %r %s from %s", collection, outcome, path)
    snap = await store.snapshot(pool, collection)
    assert snap is not None
    llm = build_llm(
        settings.openai_api_key,
        settings.openai_base_url,
        settings.openai_model,
        settings.llm_token_delay_ms,
        app[keys.HTTP],
        timeout_s=settings.llm_timeout_s,
        first_token_timeout_s=settings.llm_timeout_s * FIRST_TOKEN_TIMEOUT_FACTOR,
    )
    embedder = await asyncio.to_thread(load_embedder, settings.semantic_retrieval)
    pipeline = await asyncio.to_thread(
        AnswerPipeline.from_documents, snap.documents, llm, embedder=embedder
    )
    live = store.LiveKnowledge(pool, app[keys.DSN], collection, pipeline, snap.version)
    app[keys.PIPELINE] = pipeline
    app[keys.KNOWLEDGE] = live
    log.info(
        "knowledge base %r: version %d, %d documents, %s retrieval",
        collection,
        snap.version,
        len(snap.documents),
        "hybrid (BM25F + sentence embeddings)" if pipeline.semantic else "BM25F",
    )
    await live.start()
    yield
    await live.close()
    await asyncio.to_thread(pipeline.close)


def setup_answers(app: web.Application) -> None:
    """The admin API's routes (`answers_context` is listed in create_app)."""
    from server.answers import admin

    app.add_routes(admin.routes)
