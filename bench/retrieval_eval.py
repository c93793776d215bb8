"""Retrieval and answer quality on the SQuAD-derived test set in bench/data (CC BY-SA 4.0).

    python bench/retrieval_eval.py [--data DIR] [--no-scale] [--no-semantic] [--cv]

Prints a markdown table (R@1, R@3, R@5, MRR@10, queries/s, index build time) for our
BM25F retriever, the hybrid (BM25F + all-MiniLM-L6-v2 sentence embeddings, when the
`semantic` extra is installed) and the original design's keyword matcher, on all
queries and on two halves split by a hash of the query id: every default in
server/answers/ was tuned on the "tune" half only, so the "held-out" half shows how
they do on questions they were never fitted to. For the retrievers as served, two
end-to-end columns: the share of the mock's replies (server/answers/llm/mock.py, on
the top 5 passages) that contain a gold answer (case and spacing ignored), and the
median reply length in words. Then hit@1/hit@3 on our own paraphrased questions about
the shipped knowledge base (bench/data/kb-paraphrases), and a 10,000-passage
build/query benchmark. ``--cv`` adds the 5-fold cross-validation of the tuned
parameters within the tune half.

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
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.answers.extract import ExtractParams
from server.answers.knowledge import (
    DEFAULT_KNOWLEDGE_PATH,
    Document,
    Passage,
    load_documents,
    split_passages,
)
from server.answers.llm.mock import answer_text
from server.answers.retriever import Analyzer, Hit, Index, keyword_baseline
from server.answers.semantic import Embedder, HybridIndex, load_embedder

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_DATA = DATA / "retrieval-eval"
PARAPHRASES = DATA / "kb-paraphrases" / "queries.jsonl"
CHECK_PARAPHRASES = DATA / "kb-paraphrases" / "check.jsonl"
Search = Callable[[str, int], list[Hit]]
# The replies are made from the hits the server would hand the mock (MAX_SOURCES).
REPLY_HITS = 5
SERVED = "BM25F (ours, passages as served)"
HYBRID = "hybrid BM25F + MiniLM (ours, as served)"


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    relevant: frozenset[str]
    answers: tuple[str, ...] = ()

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
    # End to end (None where not measured): replies containing a gold answer, and
    # the median reply length in words.
    contains: float | None = None
    median_words: float | None = None


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
    return load_documents(docs_path), load_queries(queries_path)


def load_queries(path: Path) -> list[Query]:
    queries = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                queries.append(
                    Query(
                        str(q["id"]),
                        q["text"],
                        frozenset(q["relevant"]),
                        tuple(q.get("answers", ())),
                    )
                )
    return queries


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def contains_answer(reply: str, answers: Sequence[str]) -> bool:
    """Whether ``reply`` contains one of the gold ``answers``, case and spacing ignored."""
    reply = normalise(reply)
    return any(normalise(a) in reply for a in answers)


def evaluate(
    search: Search,
    queries: Sequence[Query],
    k: int = 10,
    reply: Callable[[str, list[Hit]], str] | None = None,
) -> Metrics:
    """Recall@1/3/5 and MRR@10 by document, plus queries per second (one at a time);
    with ``reply`` (question, hits -> text), the end-to-end figures too."""
    found = {1: 0, 3: 0, 5: 0}
    rr = 0.0
    start = time.perf_counter()
    results = [search(q.text, k) for q in queries]
    elapsed = time.perf_counter() - start
    contains = median = None
    if reply is not None and queries:
        replies = [
            reply(q.text, hits[:REPLY_HITS]) for q, hits in zip(queries, results, strict=True)
        ]
        pairs = zip(queries, replies, strict=True)
        contains = sum(contains_answer(text, q.answers) for q, text in pairs) / len(queries)
        median = statistics.median(len(text.split()) for text in replies)
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
        len(queries),
        found[1] / n,
        found[3] / n,
        found[5] / n,
        rr / n,
        len(queries) / elapsed if elapsed else 0.0,
        contains,
        median,
    )


def whole(docs: Sequence[Document]) -> list[Passage]:
    return [Passage(d.id, d.id, d.topic, d.content) for d in docs]


def mock_reply(params: ExtractParams | None = None) -> Callable[[str, list[Hit]], str]:
    """The mock LLM's whole reply for a question and its hits."""
    analyzer = Analyzer()
    return lambda question, hits: answer_text(question, hits, analyzer, params)


_HYBRIDS: dict[tuple[str, ...], HybridIndex] = {}


def _hybrid(docs: Sequence[Document], embedder: Embedder) -> HybridIndex:
    """The hybrid index of ``docs`` (embedding them takes minutes: once per run)."""
    key = tuple(d.id for d in docs)
    if key not in _HYBRIDS:
        _HYBRIDS[key] = HybridIndex.build(Index.build(split_passages(docs)), embedder.embed)
    return _HYBRIDS[key]


def hybrid_search(index: HybridIndex, embedder: Embedder) -> Search:
    """Search as the server does: the question embedded once, then the fused ranking."""

    def search(query: str, k: int) -> list[Hit]:
        (vector,) = embedder.embed([query])
        return index.search(query, vector, k)

    return search


def run(
    data_dir: Path = DEFAULT_DATA,
    embedder: Embedder | None = None,
    queries_filter: Callable[[list[Document], list[Query]], tuple] | None = None,
) -> list[Row]:
    """The table's rows; with ``embedder``, the hybrid retriever's too.
    ``queries_filter`` may cut the data down (docs, queries) -> (docs, queries)."""
    docs, queries = load_eval(data_dir)
    if queries_filter is not None:
        docs, queries = queries_filter(docs, queries)
    subsets = {
        "all": queries,
        "tune": [q for q in queries if q.split == "tune"],
        "held-out": [q for q in queries if q.split == "held-out"],
    }
    rows: list[Row] = []
    reply = mock_reply()

    def measure(name: str, build: Callable[[], Search], k: int, served: bool = False) -> None:
        start = time.perf_counter()
        search = build()
        build_s = time.perf_counter() - start
        for subset, qs in subsets.items():
            metrics = evaluate(lambda q, _k: search(q, k), qs, reply=reply if served else None)
            rows.append(Row(name, subset, metrics, build_s))

    # k=20 passages so that 10 distinct documents remain after split documents merge.
    measure(SERVED, lambda: Index.build(split_passages(docs)).search, 20, served=True)
    if embedder is not None:
        measure(HYBRID, lambda: hybrid_search(_hybrid(docs, embedder), embedder), 20, served=True)
    measure("BM25F (ours, whole documents)", lambda: Index.build(whole(docs)).search, 10)
    measure("keyword match (original design)", lambda: keyword_baseline(whole(docs)), 10)
    return rows


def dense_search(index: HybridIndex, embedder: Embedder) -> Search:
    """The embedding alone: passages by their similarity to the question (no BM25F, no
    threshold), to show what the model does by itself."""

    def search(query: str, k: int) -> list[Hit]:
        similarity = index.similarity(embedder.embed([query])[0])
        best = similarity.argsort()[::-1][:k]
        return [Hit(index.passages[i], float(similarity[i])) for i in best.tolist()]

    return search


def paraphrases(embedder: Embedder | None) -> list[tuple[str, Metrics]]:
    """hit@1 (R@1) and hit@3 on our paraphrased questions about the shipped knowledge
    base, for each retriever: queries.jsonl (50, seen while developing) and check.jsonl
    (40, written later and never tuned on)."""
    lexical = Index.build(split_passages(load_documents(DEFAULT_KNOWLEDGE_PATH)))
    hybrid = HybridIndex.build(lexical, embedder.embed) if embedder is not None else None
    out = []
    for path in (PARAPHRASES, CHECK_PARAPHRASES):
        queries = load_queries(path)
        out.append((f"BM25F, {path.name}", evaluate(lexical.search, queries, 20)))
        if hybrid is not None and embedder is not None:
            for name, search in (
                ("MiniLM alone", dense_search(hybrid, embedder)),
                ("hybrid", hybrid_search(hybrid, embedder)),
            ):
                out.append((f"{name}, {path.name}", evaluate(search, queries, 20)))
    return out


# --- cross-validation of the tuned parameters --------------------------------------------

FOLDS = 5
# The longest median reply (words) a setting of the extraction may give on the training
# folds: the target is 40 on unseen questions; 38 leaves a margin. And the longest
# 90th percentile: a chat answer of more than 60 words is a paragraph again.
MEDIAN_WORDS_CAP = 38
P90_WORDS_CAP = 60


def _folds(queries: Sequence[Query]) -> list[list[Query]]:
    return [[q for n, q in enumerate(queries) if n % FOLDS == f] for f in range(FOLDS)]


def _nested(
    name: str,
    grid: Sequence[object],
    score: Callable[[object, Sequence[Query]], float],
    folds: list[list[Query]],
    choose: Callable[[object, list[list[Query]]], float] | None = None,
) -> str:
    """For each fold: the grid value best on the other folds, and its score on this one.
    ``choose(value, training folds)`` ranks the values when it is not the mean score
    (a constraint on the training folds as a whole)."""
    per_fold = {value: [score(value, fold) for fold in folds] for value in grid}
    sizes = [len(f) for f in folds]
    lines = []
    held = []
    for f in range(FOLDS):

        def train(value: object, f: int = f) -> float:
            if choose is not None:
                return choose(value, [folds[g] for g in range(FOLDS) if g != f])
            rest = [(per_fold[value][g], sizes[g]) for g in range(FOLDS) if g != f]
            return sum(s * n for s, n in rest) / sum(n for _, n in rest)

        best = max(grid, key=train)
        held.append(per_fold[best][f])
        lines.append(f"fold {f + 1}: chose {best}, {per_fold[best][f]:.3f} on the fold")
    spread = f"{statistics.mean(held):.3f} ± {statistics.stdev(held):.3f} (min {min(held):.3f})"
    return f"{name}: " + "; ".join(lines) + f". Held-out folds: {spread}."


def cross_validate(data_dir: Path = DEFAULT_DATA, embedder: Embedder | None = None) -> str:
    """5-fold cross-validation within the tune half, for each tuned parameter group:
    the value each fold's training part picks, and how it does on that fold."""
    import dataclasses

    docs, queries = load_eval(data_dir)
    tune = [q for q in queries if q.split == "tune"]
    folds = _folds(tune)
    passages = split_passages(docs)
    out = []

    def r1_of(search: Search) -> Callable[[object, Sequence[Query]], float]:
        return lambda _value, qs: evaluate(search, qs, 20).r1

    for knob, grid in (
        ("k1", (0.3, 0.45, 0.6, 0.9, 1.2)),
        ("b", (0.5, 0.75, 0.9)),
        ("topic_weight", (2.0, 3.0, 4.0, 6.0)),
        ("topic_b", (0.0, 0.3, 0.6)),
        ("bigram_weight", (0.0, 0.25, 0.5, 1.0)),
    ):
        searches = {v: Index.build(passages, **{knob: v}).search for v in grid}
        out.append(
            _nested(
                f"BM25F {knob} (R@1)",
                grid,
                lambda v, qs, s=searches: evaluate(s[v], qs, 20).r1,
                folds,
            )
        )

    lexical = Index.build(passages)
    hits = {q.id: lexical.search(q.text, REPLY_HITS) for q in tune}
    grid = [
        ExtractParams(passages=p, rank_weight=r, second_ratio=s, max_words=w)
        for p in (2, 3)
        for r in (1.0, 2.0, 4.0)
        for s in (0.7, 0.8, 0.9)
        for w in (60, 80)
    ]
    replies: dict[tuple[ExtractParams, str], str] = {}
    analyzer = Analyzer()

    def replies_for(params: object, qs: Sequence[Query]) -> list[str]:
        texts = []
        for q in qs:
            key = (params, q.id)
            if key not in replies:
                replies[key] = answer_text(q.text, hits[q.id], analyzer, params)  # type: ignore[arg-type]
            texts.append(replies[key])
        return texts

    def contains(params: object, qs: Sequence[Query]) -> float:
        texts = replies_for(params, qs)
        return sum(contains_answer(t, q.answers) for t, q in zip(texts, qs, strict=True)) / len(qs)

    def within_budget(params: object, training: list[list[Query]]) -> float:
        qs = [q for fold in training for q in fold]
        lengths = sorted(len(t.split()) for t in replies_for(params, qs))
        if (
            statistics.median(lengths) > MEDIAN_WORDS_CAP
            or lengths[int(0.9 * (len(lengths) - 1))] > P90_WORDS_CAP
        ):
            return -1.0
        return contains(params, qs)

    def short(p: object) -> str:
        assert isinstance(p, ExtractParams)
        return (
            f"(passages {p.passages}, rank {p.rank_weight:g}, second {p.second_ratio:g}, "
            f"max {p.max_words})"
        )

    line = _nested(
        "extraction (reply contains answer; chosen with median ≤ 38 words and 90th"
        " percentile ≤ 60 on the training folds)",
        grid,
        contains,
        folds,
        within_budget,
    )
    for p in grid:
        line = line.replace(str(p), short(p))
    out.append(line)

    if embedder is not None:
        hybrid = _hybrid(docs, embedder)
        vectors = dict(
            zip([q.text for q in tune], embedder.embed([q.text for q in tune]), strict=True)
        )
        weights = (0.5, 0.6, 0.7, 0.8, 0.9)
        indexes = {w: dataclasses.replace(hybrid, semantic_weight=w) for w in weights}
        out.append(
            _nested(
                "hybrid semantic_weight (R@1)",
                weights,
                lambda w, qs: (
                    evaluate(lambda text, k: indexes[w].search(text, vectors[text], k), qs, 20).r1
                ),
                folds,
            )
        )
    return "\n\n".join(out)


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
        "| retriever | queries | R@1 | R@3 | R@5 | MRR@10 | reply contains answer "
        "| median reply (words) | queries/s | index build |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row.metrics
        contains = "–" if m.contains is None else f"{m.contains:.1%}"
        words = "–" if m.median_words is None else f"{m.median_words:g}"
        lines.append(
            f"| {row.retriever} | {row.subset} ({m.queries}) | {m.r1:.3f} | {m.r3:.3f} "
            f"| {m.r5:.3f} | {m.mrr10:.3f} | {contains} | {words} | {m.qps:,.0f} "
            f"| {row.build_s:.2f} s |"
        )
    return "\n".join(lines)


def format_paraphrases(results: Sequence[tuple[str, Metrics]]) -> str:
    lines = ["| retriever | questions | hit@1 | hit@3 |", "|---|---|---|---|"]
    for name, m in results:
        lines.append(
            f"| {name} | {m.queries} | {m.r1:.0%} ({round(m.r1 * m.queries)}) "
            f"| {m.r3:.0%} ({round(m.r3 * m.queries)}) |"
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
    parser.add_argument("--no-semantic", action="store_true", help="BM25F only (no embeddings)")
    parser.add_argument("--cv", action="store_true", help="5-fold CV of the tuned parameters")
    args = parser.parse_args(argv)
    embedder = None if args.no_semantic else load_embedder()
    try:
        rows = run(args.data, embedder)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print()
    print(
        "Defaults were tuned on the 'tune' half only (even SHA-1 of the query id); "
        "'held-out' queries were never used for tuning."
    )
    print()
    print("Paraphrased questions about the shipped knowledge base (bench/data/kb-paraphrases):")
    print()
    print(format_paraphrases(paraphrases(embedder)))
    if args.cv:
        print()
        print(cross_validate(args.data, embedder))
    if not args.no_scale:
        print(scale_benchmark(args.data))
    print(machine_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
