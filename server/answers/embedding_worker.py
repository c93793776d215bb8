"""The one thread that runs the embedding model: questions in micro-batches, first.

Why one thread: on a 2-core machine, a question embedding per executor thread (the
default executor has six) let six ONNX runs at a time compete with the event loop
for the cores, and queued bcrypt and DNS work behind them (py-spy, 50 chatting
connections: 3.2 executor threads busy on average against 0.46 for the event loop).
Here a single thread owns the model, so it uses one core at most, at a lower CPU
priority (``nice``) than the event loop: a frame to send wins the core over a
question to embed.

Why batches: whatever questions are waiting when the thread is free go in one ONNX
run, so a burst costs one run's overhead instead of many, and the queue drains as
fast as the model allows instead of growing. A question asked again (after the same
spacing and case, which give the model the same input) comes from an LRU cache, and
the same question asked while its embedding is running waits for that run.

Passages (index builds, admin edits) go through the same thread in small chunks,
taken only when no question waits, so a rebuild delays a question by one chunk at
most.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_BATCH = 64  # questions in one run: beyond that the run's cost grows with its size
CACHE_SIZE = 2048  # question vectors kept (384 floats: 1.5 KB each, 3 MB in all)
PASSAGE_CHUNK = 4  # passages a run while building (~30 ms each): questions wait that long
NICE = 10  # the thread's niceness: a tenth of the event loop's share when both want a core


def cache_key(question: str) -> str:
    """The model sees lowercased, whitespace-split text: these give the same vector."""
    return " ".join(question.split()).lower()


@dataclass(slots=True)
class Counts:
    """What the worker did, for tests and the benchmark."""

    questions: int = 0  # asked through `vector`
    cached: int = 0  # answered from the cache
    joined: int = 0  # waited for the same question's run in progress
    embedded: int = 0  # embedded by the model
    runs: int = 0  # batches of questions run
    passages: int = 0  # passage texts embedded


class EmbeddingWorker:
    """Embeds questions (``await vector(q)``) and passages (``embed(texts)``, from a
    worker thread) with ``embed``, always on the one thread this owns.

    ``embed``: texts to a (n, d) array of unit vectors (``Embedder.embed``). The
    thread starts on first use; ``close`` stops it.
    """

    def __init__(
        self,
        embed: Callable[[Sequence[str]], Any],
        *,
        max_batch: int = MAX_BATCH,
        cache_size: int = CACHE_SIZE,
        nice: int = NICE,
    ) -> None:
        self._embed = embed
        self.max_batch = max_batch
        self.cache_size = cache_size
        self.nice = nice
        self.counts = Counts()
        self._wake = threading.Condition()
        # Guarded by _wake: questions (key, text, loop) waiting, passage chunks waiting.
        self._questions: list[tuple[str, str, asyncio.AbstractEventLoop]] = []
        self._passages: deque[tuple[list[str], concurrent.futures.Future[Any]]] = deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        # Touched only on the event loop (of whichever loop asked): no lock needed.
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._running: dict[str, asyncio.Future[Any]] = {}

    # --- the event loop's side ---------------------------------------------------------

    async def vector(self, question: str) -> Any:
        """The question's unit vector; never runs the model on the calling thread."""
        key = cache_key(question)
        self.counts.questions += 1
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.counts.cached += 1
            return cached
        future = self._running.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._running[key] = loop.create_future()
            try:
                self._put(lambda: self._questions.append((key, question, loop)))
            except RuntimeError:
                del self._running[key]  # closed: the next asker must not wait for it
                raise
        else:
            self.counts.joined += 1
        # Shielded: one asker's cancel (a reply cancelled) must not fail the others.
        return await asyncio.shield(future)

    def _deliver(self, keys: list[str], vectors: Any, error: BaseException | None) -> None:
        for n, key in enumerate(keys):
            future = self._running.pop(key, None)
            if future is None or future.done():
                continue
            if error is not None:
                future.set_exception(error)
                future.exception()  # askers who all gave up must not log it as unseen
                continue
            vector = vectors[n]
            future.set_result(vector)
            self._cache[key] = vector
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    # --- any other thread's side -------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> Any:
        """Passage vectors in the order given (blocking: call it from a worker thread,
        e.g. an index build), embedded in chunks between the questions."""
        import numpy as np

        texts = list(texts)
        if not texts:
            return self._embed(texts)
        # Similar lengths in one chunk pad less.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        futures = []
        for start in range(0, len(order), PASSAGE_CHUNK):
            chunk = [texts[i] for i in order[start : start + PASSAGE_CHUNK]]
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self._put(lambda c=chunk, f=future: self._passages.append((c, f)))
            futures.append(future)
        vectors = np.concatenate([f.result() for f in futures])
        out = np.empty_like(vectors)
        out[order] = vectors
        return out

    def _put(self, add: Callable[[], None]) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError("the embedding worker is closed")
            add()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="embedding", daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self) -> None:
        """Stop the thread once the work already queued is done."""
        with self._wake:
            self._closed = True
            thread, self._thread = self._thread, None
            self._wake.notify()
        if thread is not None:
            thread.join()

    # --- the worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        lower_priority(self.nice)
        while True:
            with self._wake:
                while not (self._questions or self._passages or self._closed):
                    self._wake.wait()
                if self._questions:
                    batch = self._questions[: self.max_batch]
                    del self._questions[: self.max_batch]
                    chunk = None
                elif self._passages:
                    batch, chunk = [], self._passages.popleft()
                else:
                    return  # closed, nothing left
            if chunk is not None:
                texts, done = chunk
                try:
                    done.set_result(self._embed(texts))
                    self.counts.passages += len(texts)
                except BaseException as exc:  # the build thread raises it
                    done.set_exception(exc)
                continue
            self._run_questions(batch)

    def _run_questions(self, batch: list[tuple[str, str, asyncio.AbstractEventLoop]]) -> None:
        keys = [key for key, _, _ in batch]
        vectors, error = None, None
        try:
            vectors = self._embed([text for _, text, _ in batch])
            self.counts.runs += 1
            self.counts.embedded += len(keys)
        except Exception as exc:  # every asker's search raises it
            log.exception("embedding %d question(s) failed", len(keys))
            error = exc
        by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}
        for n, (_, _, loop) in enumerate(batch):
            by_loop.setdefault(loop, []).append(n)
        for loop, rows in by_loop.items():
            some = [keys[n] for n in rows]
            part = vectors[rows] if vectors is not None else None
            # A closed loop (RuntimeError): nobody waits there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._deliver, some, part, error)


def lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (Linux: per thread)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:
        log.warning("could not lower the embedding thread's priority: %s", exc)
