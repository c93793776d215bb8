"""What every language-model provider offers, and the prompt they share.

A provider turns a question plus the retrieved passages into a stream of text
pieces. The reply machinery only ever sees ``LLM.stream`` and ``LLMError``, so a
local stand-in, the mock and a real OpenAI-compatible service are interchangeable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from ..retriever import Hit

SYSTEM_PROMPT = (
    "You are the help assistant of a chat server. Answer the user's question using only "
    "the knowledge-base passages below. If they do not contain the answer, say that you "
    "have no information on that; never invent facts, settings or endpoints. Keep the "
    "answer short and in plain prose, in the language of the question."
)
NO_PASSAGES = "(No passage of the knowledge base matched the question.)"


class LLMError(Exception):
    """A provider failed; ``str(exc)`` is a sentence a person can read.

    Raised for every failure of a provider (refused key, rate limit, server error,
    connection lost, a stream cut short or garbled, a timeout), never a bare
    aiohttp or JSON exception, so callers need to catch only this.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@runtime_checkable
class LLM(Protocol):
    """A language model that answers a question from retrieved passages."""

    def stream(self, question: str, hits: Sequence[Hit]) -> AsyncIterator[str]:
        """Yield the answer in pieces; joined in order they are the whole answer.

        Cancelling the consuming task (or ``aclose()`` on the iterator) stops the
        generation promptly and releases what it holds (e.g. the HTTP response).

        Raises:
            LLMError: the provider failed.
        """
        ...


def build_prompt(question: str, hits: Sequence[Hit]) -> list[dict[str, str]]:
    """Chat messages (OpenAI format) with the passages in context, best first."""
    if hits:
        context = "\n\n".join(
            f"[{n}] {hit.passage.topic} (id {hit.passage.id})\n{hit.passage.text}"
            for n, hit in enumerate(hits, start=1)
        )
    else:
        context = NO_PASSAGES
    return [
        {"role": "system", "content": f"{SYSTEM_PROMPT}\n\nKnowledge base passages:\n\n{context}"},
        {"role": "user", "content": question},
    ]
