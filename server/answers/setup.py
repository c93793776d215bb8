"""The answer pipeline inside the app: knowledge loaded and indexed at start-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from server import keys
from server.answers.knowledge import load_documents
from server.answers.pipeline import AnswerPipeline, build_llm

log = logging.getLogger(__name__)


async def answers_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    documents = await asyncio.to_thread(load_documents, settings.knowledge_path)
    llm = build_llm(
        settings.openai_api_key,
        settings.openai_base_url,
        settings.openai_model,
        settings.llm_token_delay_ms,
        app[keys.HTTP],
        timeout_s=settings.llm_timeout_s,
    )
    app[keys.PIPELINE] = await asyncio.to_thread(AnswerPipeline.from_documents, documents, llm)
    log.info("knowledge base: %d documents from %s", len(documents), settings.knowledge_path)
    yield


def setup_answers(app: web.Application) -> None:
    app.cleanup_ctx.append(answers_context)
