"""Fixtures for the answer pipeline's tests: the OpenAI stand-in and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

# pytest puts this folder (no __init__.py) on sys.path, so the stand-in imports by name.
from openai_standin import OpenAIStandIn


@pytest.fixture
async def standin() -> AsyncIterator[OpenAIStandIn]:
    server = OpenAIStandIn()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
