"""The mock language model: answers with the sentences that answer, word by word.

Deterministic and offline, so the server runs, streams and can be tested without
any outside service (``OPENAI_API_KEY`` unset or ``mock``). It never invents: it
quotes the one or two sentences of the retrieved passages that best answer the
question (``server/answers/extract.py``) and names their topics; with no passage
it says it has no information.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Sequence

from ..extract import ExtractParams, best_sentences
from ..retriever import Analyzer, Hit
from ..sentences import split_sentences

NO_INFORMATION = (
    "I'm sorry, I have no information on that in our knowledge base. "
    "Try asking about the chat server: embedding the widget, settings, accounts or history."
)

# A token is a run of non-space characters with the whitespace that follows it, so
# the tokens joined give the answer back exactly (leading whitespace is its own token).
_TOKEN = re.compile(r"\s+|\S+\s*")
# With no delay, hand control back to the event loop every this many tokens.
_YIELD_EVERY = 64


def answer_text(
    question: str,
    hits: Sequence[Hit],
    analyzer: Analyzer | None = None,
    params: ExtractParams | None = None,
) -> str:
    """The whole answer the mock gives: the answering sentences, then their topics.

    When no sentence shares a word with the question (a hit found by meaning
    alone), the best passage's first sentence answers: it says what the passage
    is about.
    """
    if not hits:
        return NO_INFORMATION
    chosen = best_sentences(question, hits, analyzer or Analyzer(), params)
    if chosen:
        text = " ".join(s.text for s in chosen)
        topics = list(dict.fromkeys(s.hit.passage.topic for s in chosen))
    else:
        best = hits[0].passage
        text = split_sentences(best.text)[0]
        topics = [best.topic]
    return f"{text} (from “{'” and “'.join(topics)}”)"


def split_tokens(text: str) -> list[str]:
    """Words with their trailing whitespace; ``"".join(split_tokens(t)) == t``."""
    return _TOKEN.findall(text)


class MockLLM:
    """Streams ``answer_text(question, hits)`` with ``delay_ms`` between tokens (0: no
    sleeping)."""

    def __init__(self, delay_ms: float = 0) -> None:
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        self.delay_ms = delay_ms
        self._analyzer = Analyzer()
        # Popular questions get the same answer: choose its sentences and split it once
        # for the same question and passages.
        self._answers = functools.lru_cache(maxsize=1024)(self._answer_tokens)

    def _answer_tokens(self, question: str, hits: tuple[Hit, ...]) -> tuple[str, ...]:
        return tuple(split_tokens(answer_text(question, hits, self._analyzer)))

    async def stream(self, question: str, hits: Sequence[Hit]) -> AsyncIterator[str]:
        delay = self.delay_ms / 1000
        for n, token in enumerate(self._answers(question, tuple(hits))):
            if delay:
                if n:
                    await asyncio.sleep(delay)
            elif n and n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            yield token
