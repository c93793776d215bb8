"""The mock language model: answers with the best retrieved passage, word by word.

Deterministic and offline, so the server runs, streams and can be tested without
any outside service (``OPENAI_API_KEY`` unset or ``mock``). It never invents: with
no passage it says it has no information.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Sequence

from ..retriever import Hit

NO_INFORMATION = (
    "I'm sorry, I have no information on that in our knowledge base. "
    "Try asking about the chat server: embedding the widget, settings, accounts or history."
)

# A token is a run of non-space characters with the whitespace that follows it, so
# the tokens joined give the answer back exactly (leading whitespace is its own token).
_TOKEN = re.compile(r"\s+|\S+\s*")
# With no delay, hand control back to the event loop every this many tokens.
_YIELD_EVERY = 64


def answer_text(hits: Sequence[Hit]) -> str:
    """The whole answer the mock gives for these hits."""
    if not hits:
        return NO_INFORMATION
    best = hits[0].passage
    return f"From our knowledge base on “{best.topic}”: {best.text}"


def split_tokens(text: str) -> list[str]:
    """Words with their trailing whitespace; ``"".join(split_tokens(t)) == t``."""
    return _TOKEN.findall(text)


class MockLLM:
    """Streams ``answer_text(hits)`` with ``delay_ms`` between tokens (0: no sleeping)."""

    def __init__(self, delay_ms: float = 0) -> None:
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        self.delay_ms = delay_ms
        # The answers are the knowledge base's passages: split each one once.
        self._tokens = functools.lru_cache(maxsize=1024)(lambda text: tuple(split_tokens(text)))

    async def stream(self, question: str, hits: Sequence[Hit]) -> AsyncIterator[str]:
        delay = self.delay_ms / 1000
        for n, token in enumerate(self._tokens(answer_text(hits))):
            if delay:
                if n:
                    await asyncio.sleep(delay)
            elif n and n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            yield token
