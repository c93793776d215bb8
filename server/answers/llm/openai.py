"""An OpenAI-compatible chat-completions provider, streamed over server-sent events.

Speaks ``POST {base_url}/chat/completions`` with ``"stream": true`` and reads the
``data: {...}`` events up to ``data: [DONE]``. The same code talks to OpenAI, Ollama
(``http://localhost:11434/v1``), vLLM and llama.cpp's server: only the base URL and
the model name change.

Every failure becomes an ``LLMError`` with a sentence a person can read, and no
reply can hang: the first piece of text must come within ``first_token_timeout_s``
and each later read within ``timeout_s``.

The conversation's earlier turns go with the question, between the system prompt
and it: the newest ones within ``history_turns`` turns and ``history_chars``
characters, sent oldest first (`earlier_messages`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

import aiohttp

from ..retriever import Hit
from .base import LLMError, build_prompt

_SERVICE = "the language model service"
_MAX_ERROR_BODY = 64 * 1024
HISTORY_TURNS = 20  # earlier questions and replies, each one turn
HISTORY_CHARS = 8000  # their characters together


def earlier_messages(
    earlier: Sequence[tuple[bool, str]], max_turns: int, max_chars: int
) -> list[dict[str, str]]:
    """The newest of ``earlier`` (``(is_user_message, text)``, oldest first) that fit in
    ``max_turns`` turns and ``max_chars`` characters, as chat messages oldest first. A
    turn that does not fit whole ends the list: no turn is cut, and none older is sent."""
    kept: list[dict[str, str]] = []
    chars = 0
    for is_user, text in reversed(earlier):
        if len(kept) >= max_turns or chars + len(text) > max_chars:
            break
        chars += len(text)
        kept.append({"role": "user" if is_user else "assistant", "content": text})
    kept.reverse()
    return kept


class SSEDecoder:
    """Sans-I/O server-sent-events decoder: feed lines, get each event's data.

    Follows the HTML spec's rules that matter here: ``data:`` lines accumulate
    (joined by newlines), a blank line ends the event, lines starting with ``:``
    are comments, other fields (``event``, ``id``, ``retry``) are ignored.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """Take one line (without or with its line ending); return an event's data
        when this line completes one."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        """The data of an event left unterminated at the end of the stream, if any."""
        return self.feed("")


class OpenAIChatLLM:
    """Streams answers from an OpenAI-compatible ``/chat/completions`` endpoint.

    The caller owns ``session`` (one per application, closed on shutdown).
    ``timeout_s`` bounds connecting and every wait between two reads once text
    flows; ``first_token_timeout_s`` bounds the wait from sending the request to the
    first piece of text (a local model may need a while to load).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_key: str,
        base_url: str = "https://api.openai.com/v1",
        model: str = "gpt-4o-mini",
        timeout_s: float = 30,
        first_token_timeout_s: float = 60,
        temperature: float | None = 0.2,
        history_turns: int = HISTORY_TURNS,
        history_chars: int = HISTORY_CHARS,
    ) -> None:
        if timeout_s <= 0 or first_token_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self.session = session
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.temperature = temperature
        self.history_turns = history_turns
        self.history_chars = history_chars

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def request_body(
        self, question: str, hits: Sequence[Hit], earlier: Sequence[tuple[bool, str]] = ()
    ) -> dict[str, object]:
        messages = build_prompt(question, hits)
        turns = earlier_messages(earlier, self.history_turns, self.history_chars)
        body: dict[str, object] = {
            "model": self.model,
            "messages": [*messages[:-1], *turns, messages[-1]],
            "stream": True,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def stream(
        self, question: str, hits: Sequence[Hit], earlier: Sequence[tuple[bool, str]] = ()
    ) -> AsyncIterator[str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        deadline = time.monotonic() + self.first_token_timeout_s
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                response = await self.session.post(
                    self.url,
                    json=self.request_body(question, hits, earlier),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s),
                )
        except TimeoutError:
            raise LLMError(
                f"{_SERVICE} did not answer within {self.first_token_timeout_s:g} s"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise LLMError(f"could not connect to {_SERVICE} at {self.base_url}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise LLMError(f"{_SERVICE} request failed: {_describe(exc)}") from None

        finished = False
        try:
            if response.status != 200:
                raise await _status_error(response)
            if response.content_type == "application/json":
                # A server that ignored "stream": true and sent the whole answer.
                payload = await self._read_json(response, deadline)
                text = _message_text(payload)
                finished = True
                if text:
                    yield text
                return
            async with aclosing(self._events(response, deadline)) as events:
                async for piece in events:
                    yield piece
            finished = True
        finally:
            if finished:
                response.release()
            else:
                # Cancelled, closed early or failed: drop the connection so the
                # service stops generating and nothing half-read goes back to the pool.
                response.close()

    async def _events(
        self, response: aiohttp.ClientResponse, deadline: float
    ) -> AsyncIterator[str]:
        decoder = SSEDecoder()
        started = False
        saw_finish = False
        while True:
            limit = None if started else deadline
            line = await self._readline(response, limit)
            data = decoder.feed(line.decode("utf-8", errors="replace")) if line else decoder.flush()
            if data is not None:
                if data.strip() == "[DONE]":
                    return
                piece, done = _parse_chunk(data)
                saw_finish = saw_finish or done
                if piece:
                    started = True
                    yield piece
            if not line:
                if saw_finish:  # some servers omit [DONE] after the final chunk
                    return
                raise LLMError(f"{_SERVICE} closed the stream before the answer was complete")

    async def _readline(self, response: aiohttp.ClientResponse, deadline: float | None) -> bytes:
        try:
            if deadline is None:
                async with asyncio.timeout(self.timeout_s):
                    return await response.content.readline()
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await response.content.readline()
        except TimeoutError:
            waited = self.timeout_s if deadline is None else self.first_token_timeout_s
            raise LLMError(f"{_SERVICE} stopped answering (no data for {waited:g} s)") from None
        except ValueError as exc:  # aiohttp: a line longer than its buffer limit
            raise LLMError(f"{_SERVICE} sent an unreadable stream: {exc}") from None
        except aiohttp.ClientError as exc:
            raise LLMError(
                f"{_SERVICE} closed the stream before the answer was complete: {_describe(exc)}"
            ) from None

    async def _read_json(self, response: aiohttp.ClientResponse, deadline: float) -> object:
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                return json.loads(await response.read())
        except TimeoutError:
            raise LLMError(
                f"{_SERVICE} did not answer within {self.first_token_timeout_s:g} s"
            ) from None
        except (ValueError, aiohttp.ClientError) as exc:
            raise LLMError(f"{_SERVICE} sent an unreadable answer: {_describe(exc)}") from None


def _loop_time(deadline: float) -> float:
    """Convert a ``time.monotonic()`` deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _parse_chunk(data: str) -> tuple[str, bool]:
    """One ``chat.completion.chunk`` event → (its text, whether a choice finished)."""
    try:
        event = json.loads(data)
    except ValueError:
        raise LLMError(f"{_SERVICE} sent a malformed event (not JSON): {data[:80]!r}") from None
    if not isinstance(event, dict):
        raise LLMError(f"{_SERVICE} sent a malformed event: {data[:80]!r}")
    if "error" in event:
        raise LLMError(f"{_SERVICE} reported an error: {_error_message(event) or data[:200]}")
    choices = event.get("choices")
    if not isinstance(choices, list):
        raise LLMError(f"{_SERVICE} sent a malformed event (no choices): {data[:80]!r}")
    if not choices:  # e.g. a final usage-only chunk
        return "", False
    choice = choices[0]
    if not isinstance(choice, dict):
        raise LLMError(f"{_SERVICE} sent a malformed event: {data[:80]!r}")
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise LLMError(f"{_SERVICE} sent a malformed event (content is not text)")
    return content or "", choice.get("finish_reason") is not None


def _message_text(payload: object) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        raise LLMError(f"{_SERVICE} sent an answer without a message") from None
    if content is not None and not isinstance(content, str):
        raise LLMError(f"{_SERVICE} sent an answer whose content is not text")
    return content or ""


def _error_message(payload: object) -> str:
    """The ``error.message`` of an OpenAI-style error body, or ''."""
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(payload.get("detail"), str):
            return payload["detail"]
    return ""


async def _status_error(response: aiohttp.ClientResponse) -> LLMError:
    status = response.status
    detail = ""
    try:
        async with asyncio.timeout(5):
            raw = await response.content.read(_MAX_ERROR_BODY)
        try:
            detail = _error_message(json.loads(raw))
        except ValueError:
            detail = raw.decode("utf-8", errors="replace").strip()
    except (TimeoutError, aiohttp.ClientError):
        pass
    detail = " ".join(detail.split())[:200]
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        message = f"{_SERVICE} refused the API key ({status}){suffix}"
    elif status == 429:
        retry_after = response.headers.get("Retry-After", "").strip()
        when = f"retry in {retry_after} s" if retry_after.isdigit() else "retry later"
        message = f"{_SERVICE} is rate limiting requests (429); {when}{suffix}"
    elif status >= 500:
        message = f"{_SERVICE} failed ({status} {response.reason or 'server error'}){suffix}"
    else:
        message = f"{_SERVICE} rejected the request ({status}){suffix}"
    return LLMError(message, status=status)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
