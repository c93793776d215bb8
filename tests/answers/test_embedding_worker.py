"""The embedding thread: micro-batches, questions first, the cache, errors, shutdown."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from server.answers.embedding_worker import EmbeddingWorker, cache_key


class Model:
    """A stand-in for ``Embedder.embed``: one-hot-ish vectors from the text's hash,
    every call noted (texts, thread, niceness); ``gate`` holds a run until set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.nice: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_on: str | None = None

    def __call__(self, texts: Sequence[str]) -> Any:
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        self.started.set()
        assert self.gate.wait(10)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("the model failed")
        return np.array([[len(t), sum(map(ord, t))] for t in texts], dtype=np.float32)


@pytest.fixture
def model() -> Model:
    return Model()


@pytest.fixture
def worker(model: Model) -> Iterator[EmbeddingWorker]:
    worker = EmbeddingWorker(model, nice=3)
    yield worker
    model.gate.set()
    worker.close()


async def wait_started(model: Model) -> None:
    assert await asyncio.to_thread(model.started.wait, 10)
    model.started.clear()


async def asked_while_running(
    worker: EmbeddingWorker, model: Model, *questions: str
) -> list[asyncio.Future[Any]]:
    """The questions asked, the model held inside the first one's run."""
    model.gate.clear()
    asked = [asyncio.ensure_future(worker.vector(q)) for q in questions]
    await wait_started(model)
    return asked


async def test_questions_that_wait_together_are_embedded_in_one_run(
    worker: EmbeddingWorker, model: Model
) -> None:
    (first,) = await asked_while_running(worker, model, "first question")
    others = [asyncio.ensure_future(worker.vector(f"question {n}")) for n in range(5)]
    await asyncio.sleep(0.05)
    assert not first.done()  # the loop ran on while the model worked
    model.gate.set()
    vectors = await asyncio.gather(first, *others)
    assert model.calls == [["first question"], [f"question {n}" for n in range(5)]]
    assert [float(v[0]) for v in vectors] == [14.0] + [10.0] * 5
    assert model.threads == {"embedding"}
    assert worker.counts.runs == 2 and worker.counts.embedded == 6


async def test_a_repeat_comes_from_the_cache_and_a_concurrent_one_waits_for_the_same_run(
    worker: EmbeddingWorker, model: Model
) -> None:
    a, b = await asked_while_running(
        worker, model, "How often does the purge run?", "how  often does the PURGE run?"
    )
    model.gate.set()
    va, vb = await asyncio.gather(a, b)
    again = await worker.vector(" How often does the purge run? ")
    assert model.calls == [["How often does the purge run?"]]
    assert va is vb is again
    assert (worker.counts.questions, worker.counts.joined, worker.counts.cached) == (3, 1, 1)
    assert cache_key("A  b\tC") == cache_key("a b c") == "a b c"


async def test_the_cache_keeps_the_most_recent(model: Model) -> None:
    worker = EmbeddingWorker(model, cache_size=2)
    try:
        for text in ["one", "two", "one", "three", "one", "two"]:
            await worker.vector(text)
        # "two" was the least recently used when "three" came: embedded twice.
        assert [c[0] for c in model.calls] == ["one", "two", "three", "two"]
    finally:
        worker.close()


async def test_questions_go_before_waiting_passages(worker: EmbeddingWorker, model: Model) -> None:
    model.gate.clear()
    passages = [f"passage {n:02d}" for n in range(12)]
    build = asyncio.ensure_future(asyncio.to_thread(worker.embed, passages))
    await wait_started(model)  # the first chunk of passages runs
    question = asyncio.ensure_future(worker.vector("a question"))
    await asyncio.sleep(0.05)
    model.gate.set()
    vectors, _ = await asyncio.gather(build, question)
    assert model.calls[1] == ["a question"]  # next after the chunk in progress
    assert len(model.calls) == 1 + 1 + 2 and all(len(c) <= 4 for c in model.calls)
    assert [int(v[1]) for v in vectors] == [sum(map(ord, p)) for p in passages]  # in order
    assert worker.counts.passages == 12


async def test_a_failed_run_fails_its_questions_and_the_thread_goes_on(
    worker: EmbeddingWorker, model: Model
) -> None:
    model.fail_on = "bad"
    with pytest.raises(RuntimeError, match="the model failed"):
        await worker.vector("bad")
    assert float((await worker.vector("good"))[0]) == 4.0
    with pytest.raises(RuntimeError, match="the model failed"):
        await asyncio.to_thread(worker.embed, ["fine", "bad"])
    model.fail_on = None
    runs = len(model.calls)
    assert float((await worker.vector("bad"))[0]) == 3.0
    assert len(model.calls) == runs + 1  # the failure was not cached


async def test_one_asker_cancelled_leaves_the_others_their_answer(
    worker: EmbeddingWorker, model: Model
) -> None:
    a, b = await asked_while_running(worker, model, "same", "same")
    a.cancel()
    model.gate.set()
    assert float((await b)[0]) == 4.0
    assert a.cancelled()


async def test_the_thread_runs_at_a_lower_priority_and_stops_on_close(
    worker: EmbeddingWorker, model: Model
) -> None:
    await worker.vector("anything")
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert model.nice == [min(mine + 3, 19)]
    worker.close()
    assert not any(t.name == "embedding" and t.is_alive() for t in threading.enumerate())
    for _ in range(2):  # and again: a refused question leaves nothing to wait for
        with pytest.raises(RuntimeError, match="closed"):
            await worker.vector("after close")
    assert await worker.vector("anything") is not None  # the cache still answers
