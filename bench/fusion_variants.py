"""Variants of hybrid retrieval measured against the shipped one (issue 17), and the
fusion weight cross-validated on SQuAD and the paraphrases together.

    python bench/fusion_variants.py

On the two sets choices may be made on: the SQuAD "tune" half (R@1, MRR@10) and
bench/data/kb-paraphrases/queries.jsonl (hit@1). The held-out SQuAD half and
check.jsonl are never read here. Embedding the SQuAD set takes minutes (once).

Variants: the embedding alone, a passage scored by the whole passage, its best
sentence (max-sim), the larger of the two, or their mean (as served); the served
fusion; reciprocal-rank fusion (k = 60); every passage competing once a question is
on topic ("all compete"); BM25F's trust scaled by how rare the matched words are
("rare-word trust"). Then 5-fold cross-validation of the base fusion weight with
both sets in every fold, scored by the mean of the two.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retrieval_eval import (
    DEFAULT_DATA,
    PARAPHRASES,
    Query,
    _hybrid,
    load_eval,
    load_queries,
)
from server.answers.knowledge import DEFAULT_KNOWLEDGE_PATH, load_documents
from server.answers.semantic import CANDIDATES, HybridIndex, load_embedder

FOLDS = 5
RRF_K = 60


@dataclass(frozen=True)
class Asked:
    """One question with what every variant needs, computed once."""

    query: Query
    whole: Any  # cosine with each passage (topic and text)
    best: Any  # cosine with each passage's best sentence
    lexical: list[tuple[int, float]]  # BM25F's candidates: (passage, score / idf mass)
    coverage: float  # the served trust: share of the idf mass the best hits match
    rare: float  # that share times the matched words' mean idf over the largest idf


def prepare(index: HybridIndex, queries: Sequence[Query], vectors: Any) -> list[Asked]:
    lex = index.lexical
    top_idf = max(lex._idf.values())
    out = []
    for query, vector in zip(queries, vectors, strict=True):
        best = np.full(len(index.passages), -1.0, dtype=np.float32)
        np.maximum.at(best, index.sentence_owner, index.sentence_vectors @ vector)
        hits = lex.search(query.text, CANDIDATES)
        mass = lex.idf_mass(query.text) or 1.0
        terms = list(dict.fromkeys(lex._analyzer.terms(query.text)))
        coverage = rare = 0.0
        for hit in hits[:5]:
            i = lex.position(hit.passage)
            matched = [lex._idf_of(t) for t in terms if i in lex._postings.get(t, ())]
            share = sum(matched) / mass
            coverage = max(coverage, share)
            if matched:
                rare = max(rare, share * statistics.mean(matched) / top_idf)
        out.append(
            Asked(
                query,
                index.vectors @ vector,
                best,
                [(lex.position(h.passage), h.score / mass) for h in hits],
                coverage,
                rare,
            )
        )
    return out


Ranker = Callable[[Asked], list[int]]


def dense(kind: str) -> Ranker:
    def rank(a: Asked) -> list[int]:
        sim = {"whole": a.whole, "sentence": a.best, "max": np.maximum(a.whole, a.best)}.get(
            kind, (a.whole + a.best) / 2
        )
        return np.argsort(-sim, kind="stable")[:20].tolist()

    return rank


def fused(
    w0: float = 0.6, *, all_compete: bool = False, rare: bool = False, min_sim: float = 0.3
) -> Ranker:
    """The served fusion (HybridIndex.search) and its two variants."""

    def rank(a: Asked) -> list[int]:
        sim = (a.whole + a.best) / 2
        trust = a.rare if rare else a.coverage
        w = w0 + (1 - w0) * (1 - trust)
        scores = {i: (1 - w) * s + w * float(sim[i]) for i, s in a.lexical}
        nearest = np.argsort(-sim, kind="stable")[:CANDIDATES].tolist()
        on_topic = bool(a.lexical) or float(sim[nearest[0]]) >= min_sim
        for i in nearest:
            if i not in scores and (sim[i] >= min_sim or (all_compete and on_topic)):
                scores[i] = w * float(sim[i])
        return [i for i, _ in sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:20]]

    return rank


def rrf(a: Asked, min_sim: float = 0.3) -> list[int]:
    sim = (a.whole + a.best) / 2
    scores: dict[int, float] = {}
    for r, (i, _) in enumerate(a.lexical):
        scores[i] = 1 / (RRF_K + r + 1)
    for r, i in enumerate(np.argsort(-sim, kind="stable")[:CANDIDATES].tolist()):
        if sim[i] >= min_sim or i in scores:
            scores[i] = scores.get(i, 0.0) + 1 / (RRF_K + r + 1)
    return [i for i, _ in sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:20]]


def score(index: HybridIndex, asked: Sequence[Asked], rank: Ranker) -> tuple[float, float]:
    """R@1 and MRR@10 by document."""
    r1 = rr = 0.0
    for a in asked:
        docs: list[str] = []
        for i in rank(a):
            doc = index.passages[i].doc_id
            if doc not in docs:
                docs.append(doc)
        found = next((n for n, d in enumerate(docs[:10], 1) if d in a.query.relevant), None)
        if found:
            rr += 1 / found
            r1 += found == 1
    return r1 / len(asked), rr / len(asked)


def folds(items: Sequence[Any]) -> list[list[Any]]:
    return [[x for n, x in enumerate(items) if n % FOLDS == f] for f in range(FOLDS)]


def main() -> None:
    embedder = load_embedder()
    if embedder is None:
        raise SystemExit("the semantic extra is not installed")
    kb = _hybrid(load_documents(DEFAULT_KNOWLEDGE_PATH), embedder)
    para_q = load_queries(PARAPHRASES)
    para = prepare(kb, para_q, embedder.embed([q.text for q in para_q]))
    docs, queries = load_eval(DEFAULT_DATA)
    tune_q = [q for q in queries if q.split == "tune"]
    squad = _hybrid(docs, embedder)
    tune = prepare(squad, tune_q, embedder.embed([q.text for q in tune_q]))

    print("| variant | SQuAD tune R@1 | MRR@10 | queries.jsonl hit@1 |")
    print("| --- | ---: | ---: | ---: |")
    variants: list[tuple[str, Ranker]] = [
        (f"MiniLM alone, {kind}", dense(kind)) for kind in ("whole", "sentence", "max", "mean")
    ]
    variants += [("hybrid as served (w0 0.6)", fused()), ("reciprocal-rank fusion", rrf)]
    variants += [(f"hybrid, w0 {w:g}", fused(w)) for w in (0.5, 0.7, 0.8, 0.9, 1.0)]
    variants += [(f"all compete, w0 {w:g}", fused(w, all_compete=True)) for w in (0.6, 0.8)]
    variants += [
        (f"rare-word trust, all compete, w0 {w:g}", fused(w, all_compete=True, rare=True))
        for w in (0.0, 0.2, 0.4, 0.6)
    ]
    for name, rank in variants:
        r1, mrr = score(squad, tune, rank)
        hit1, _ = score(kb, para, rank)
        print(f"| {name} | {r1:.3f} | {mrr:.3f} | {hit1:.0%} |")

    grid = (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    pf, sf = folds(para), folds(tune)
    table = {
        w: ([score(kb, f, fused(w))[0] for f in pf], [score(squad, f, fused(w))[0] for f in sf])
        for w in grid
    }
    chosen, held_p, held_s = [], [], []
    for f in range(FOLDS):

        def train(w: float, f: int = f) -> float:
            rest = [g for g in range(FOLDS) if g != f]
            return (
                statistics.mean(table[w][0][g] for g in rest)
                + statistics.mean(table[w][1][g] for g in rest)
            ) / 2

        best = max(grid, key=train)
        chosen.append(best)
        held_p.append(table[best][0][f])
        held_s.append(table[best][1][f])
    print(
        f"\nBase fusion weight, 5-fold CV over both sets (mean of the two): chosen {chosen}; "
        f"left-out paraphrase hit@1 {statistics.mean(held_p):.3f} ± "
        f"{statistics.stdev(held_p):.3f} (min {min(held_p):.2f}), SQuAD R@1 "
        f"{statistics.mean(held_s):.3f} ± {statistics.stdev(held_s):.3f} "
        f"(min {min(held_s):.3f})"
    )


if __name__ == "__main__":
    main()
