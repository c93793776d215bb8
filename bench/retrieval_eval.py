"""Retrieval quality and speed on the SQuAD-derived test set in bench/data (CC BY-SA 4.0).

    python bench/retrieval_eval.py [--data DIR] [--no-scale]

Prints a markdown table (R@1, R@3, R@5, MRR@10, queries/s, index build time) for our
BM25F retriever and the original design's keyword matcher, on all queries and on two
halves split by a hash of the query id: the defaults in server/answers/retriever.py
were tuned on the "tune" half only, so the "held-out" half shows how they do on
questions they were never fitted to. Then a 10,000-passage build/query benchmark.

Document-level scoring: a query is answered by the document its best passage comes
from (a document split into passages counts once, at its best rank).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.answers.knowledge import Document, Passage, load_documents, split_passages
from server.answers.retriever import Hit, Index, keyword_baseline

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "retrieval-eval"
Search = Callable[[str, int], list[Hit]]


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    relevant: frozenset[str]

    @property
    def split(self) -> str:
        """ "tune" or "held-out": the parity of the query id's SHA-1, fixed forever."""
        return "tune" if hashlib.sha1(self.id.encode()).digest()[-1] % 2 == 0 else "held-out"


@dataclass(frozen=True)
class Metrics:
    queries: int
    r1: float
    r3: float
    r5: float
    mrr10: float
    qps: float


@dataclass(frozen=True)
class Row:
    retriever: str
    subset: str
    metrics: Metrics
    build_s: float


def load_eval(data_dir: Path) -> tuple[list[Document], list[Query]]:
    data_dir = Path(data_dir)
    docs_path, queries_path = data_dir / "documents.jsonl", data_dir / "queries.jsonl"
    if not docs_path.is_file() or not queries_path.is_file():
        raise FileNotFoundError(
            f"retrieval-eval data not found in {data_dir.resolve()} (expected documents.jsonl"
            " and queries.jsonl; see bench/data/retrieval-eval/README.md)"
        )
    docs = load_documents(docs_path)
    queries = []
    with queries_path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                queries.append(Query(str(q["id"]), q["text"], frozenset(q["relevant"])))
    return docs, queries


def evaluate(search: Search, queries: Sequence[Query], k: int = 10) -> Metrics:
    """Recall@1/3/5 and MRR@10 by document, plus queries per second (one at a time)."""
    found = {1: 0, 3: 0, 5: 0}
    rr = 0.0
    start = time.perf_counter()
    results = [search(q.text, k) for q in queries]
    elapsed = time.perf_counter() - start
    for q, hits in zip(queries, results, strict=True):
        ranked: list[str] = []
        for hit in hits:
            if hit.passage.doc_id not in ranked:
                ranked.append(hit.passage.doc_id)
        rank = next((n for n, d in enumerate(ranked[:10], 1) if d in q.relevant), None)
        if rank is not None:
            rr += 1 / rank
            for cut in found:
                found[cut] += rank <= cut
    n = len(queries) or 1
    return Metrics(
        len(queries), found[1] / n, found[3] / n, found[5] / n, rr / n, len(queries) / elapsed
    )


def whole(docs: Sequence[Document]) -> list[Passage]:
    return [Passage(d.id, d.id, d.topic, d.content) for d in docs]


def run(data_dir: Path = DEFAULT_DATA) -> list[Row]:
    docs, queries = load_eval(data_dir)
    subsets = {
        "all": queries,
        "tune": [q for q in queries if q.split == "tune"],
        "held-out": [q for q in queries if q.split == "held-out"],
    }
    rows: list[Row] = []

    def measure(name: str, build: Callable[[], Search], k: int) -> None:
        start = time.perf_counter()
        search = build()
        build_s = time.perf_counter() - start
        for subset, qs in subsets.items():
            rows.append(Row(name, subset, evaluate(lambda q, _k: search(q, k), qs), build_s))

    # k=20 passages so that 10 distinct documents remain after split documents merge.
    measure(
        "BM25F (ours, passages as served)", lambda: Index.build(split_passages(docs)).search, 20
    )
    measure("BM25F (ours, whole documents)", lambda: Index.build(whole(docs)).search, 10)
    measure("keyword match (original design)", lambda: keyword_baseline(whole(docs)), 10)
    return rows


def scale_benchmark(data_dir: Path = DEFAULT_DATA, size: int = 10_000) -> str:
    """Build an index of ``size`` passages (the documents repeated) and time queries."""
    docs, queries = load_eval(data_dir)
    passages = [
        Passage(f"{d.id}~{copy}", f"{d.id}~{copy}", d.topic, d.content)
        for copy in range(size // len(docs) + 1)
        for d in docs
    ][:size]
    start = time.perf_counter()
    index = Index.build(passages)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    for q in queries:
        index.search(q.text, 5)
    per_query = (time.perf_counter() - start) / len(queries)
    return (
        f"Scale: {len(passages):,} passages ({len(docs):,} documents repeated): index build "
        f"{build_s:.2f} s; search (k=5) {per_query * 1e3:.3f} ms per query on average "
        f"over {len(queries):,} queries."
    )


def format_table(rows: Sequence[Row]) -> str:
    lines = [
        "| retriever | queries | R@1 | R@3 | R@5 | MRR@10 | queries/s | index build |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row.metrics
        lines.append(
            f"| {row.retriever} | {row.subset} ({m.queries}) | {m.r1:.3f} | {m.r3:.3f} "
            f"| {m.r5:.3f} | {m.mrr10:.3f} | {m.qps:,.0f} | {row.build_s:.2f} s |"
        )
    return "\n".join(lines)


def machine_line() -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Machine: {platform.machine()} {platform.processor() or platform.system()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; one query at a time; {today}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="retrieval-eval folder")
    parser.add_argument("--no-scale", action="store_true", help="skip the 10,000-passage benchmark")
    args = parser.parse_args(argv)
    try:
        rows = run(args.data)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print()
    print(
        "Defaults were tuned on the 'tune' half only (even SHA-1 of the query id); "
        "'held-out' queries were never used for tuning."
    )
    if not args.no_scale:
        print(scale_benchmark(args.data))
    print(machine_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
