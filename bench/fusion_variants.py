"""Variants of hybrid retrieval measured against the served one (issue 17), and the
fusion weight cross-validated on SQuAD and the paraphrases together.

    python bench/fusion_variants.py

On the two sets choices may be made on: the SQuAD "tune" half (R@1, MRR@10) and
bench/data/kb-paraphrases/queries.jsonl (hit@1, hit@3). The held-out SQuAD half and
check.jsonl are never read here. Embedding the SQuAD set takes minutes (once).

Variants of the embedding alone: a passage scored by the whole passage (topic and
text), its best sentence (max-sim), the mean of its two best sentences, its best
window of two sentences, its topic alone (a "title" vector), and means of these (the
served similarity is the mean of the whole passage and the best sentence).

Variants of the fusion: the served one (``HybridIndex.search``: BM25F's weight grows
with ``Index.coverage`` of its best hits, their share of the question's idf mass);
the specificity trust (``Index.specificity``: that share times the rarity of the most
common matched word; served for a while on 2026-12-05 and taken back because it did
not hold on the held-out sets, see bench/README.md); the share times the matched words' mean rarity;
reciprocal-rank fusion (k = 60); a log-linear sum (the cosine at the model's training
temperature, 20, plus a multiple of BM25F's raw score, which is larger the more
specific the matched words are); every passage competing once a question is on
topic ("all compete"). Then 5-fold cross-validation of the base fusion weight with
both sets in every fold, scored by the mean of the two.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
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
from server.answers.semantic import (
    CANDIDATES,
    DEFAULT_SEMANTIC_WEIGHT,
    Embedder,
    HybridIndex,
    load_embedder,
)
from server.answers.sentences import split_sentences

FOLDS = 5
RRF_K = 60
# all-MiniLM-L6-v2 was trained with its cosines scaled by 20 (sentence-transformers'
# MultipleNegativesRankingLoss): the log-linear variant keeps that scale.
COSINE_SCALE = 20.0


@dataclass(frozen=True)
class Passages:
    """A hybrid index and the extra passage vectors the dense variants need."""

    index: HybridIndex
    titles: Any  # (passages, 384): the topic alone
    windows: Any  # (windows, 384): topic and two adjacent sentences
    window_owner: Any  # (windows,): the passage row


@dataclass(frozen=True)
class Asked:
    """One question with what every variant needs, computed once."""

    query: Query
    whole: Any  # cosine with each passage (topic and text)
    best: Any  # cosine with each passage's best sentence
    second: Any  # ... and its second best (the best again for one sentence)
    window: Any  # ... its best window of two sentences
    title: Any  # ... its topic alone
    lexical: list[tuple[int, float, float]]  # BM25F's: (passage, score / idf mass, score)
    coverage: float  # the former trust: share of the idf mass the best hits match
    rare: float  # that share times the matched words' mean idf over the largest idf
    specific: float  # Index.specificity of the best hits (a variant, not served)


def build(docs: Sequence[Any], embedder: Embedder) -> Passages:
    index = _hybrid(docs, embedder)
    windows = []
    for n, p in enumerate(index.passages):
        sentences = split_sentences(p.text)
        pairs = [f"{a} {b}" for a, b in pairwise(sentences)]
        windows += [(n, f"{p.topic}. {w}") for w in pairs or sentences]
    return Passages(
        index,
        embedder.embed([p.topic for p in index.passages]),
        embedder.embed([w for _, w in windows]),
        np.array([n for n, _ in windows], dtype=np.int64),
    )


def _best_two(owner: Any, sims: Any, n: int) -> tuple[Any, Any]:
    best = np.full(n, -1.0, dtype=np.float32)
    np.maximum.at(best, owner, sims)
    second = np.full(n, -1.0, dtype=np.float32)
    is_best = sims >= best[owner]
    np.maximum.at(second, owner[~is_best], sims[~is_best])
    return best, np.where(second < -0.5, best, second)


def prepare(p: Passages, queries: Sequence[Query], vectors: Any) -> list[Asked]:
    index, lex = p.index, p.index.lexical
    n = len(index.passages)
    top_idf = max(lex._idf.values())
    out = []
    for query, vector in zip(queries, vectors, strict=True):
        best, second = _best_two(index.sentence_owner, index.sentence_vectors @ vector, n)
        window, _ = _best_two(p.window_owner, p.windows @ vector, n)
        hits = lex.search(query.text, CANDIDATES)
        mass = lex.idf_mass(query.text) or 1.0
        terms = list(dict.fromkeys(lex._analyzer.terms(query.text)))
        coverage = rare = specific = 0.0
        for hit in hits[:5]:
            i = lex.position(hit.passage)
            matched = [lex._idf_of(t) for t in terms if i in lex._postings.get(t, ())]
            share = sum(matched) / mass
            coverage = max(coverage, share)
            specific = max(specific, lex.specificity(query.text, hit.passage))
            if matched:
                rare = max(rare, share * statistics.mean(matched) / top_idf)
        out.append(
            Asked(
                query,
                index.vectors @ vector,
                best,
                second,
                window,
                p.titles @ vector,
                [(lex.position(h.passage), h.score / mass, h.score) for h in hits],
                coverage,
                rare,
                specific,
            )
        )
    return out


Ranker = Callable[[Asked], list[int]]
SIMILARITIES: dict[str, Callable[[Asked], Any]] = {
    "whole passage": lambda a: a.whole,
    "best sentence": lambda a: a.best,
    "best window of two sentences": lambda a: a.window,
    "topic alone (title vector)": lambda a: a.title,
    "whole and best sentence, mean (served)": lambda a: (a.whole + a.best) / 2,
    "whole and mean of the two best sentences": lambda a: (a.whole + (a.best + a.second) / 2) / 2,
    "whole, best sentence and title, mean": lambda a: (a.whole + a.best + a.title) / 3,
    "whole, best sentence and best window, mean": lambda a: (a.whole + a.best + a.window) / 3,
}
SERVED_SIMILARITY = SIMILARITIES["whole and best sentence, mean (served)"]


def dense(similarity: Callable[[Asked], Any]) -> Ranker:
    return lambda a: np.argsort(-similarity(a), kind="stable")[:20].tolist()


def fused(
    w0: float = DEFAULT_SEMANTIC_WEIGHT,
    *,
    trust: str = "coverage",
    all_compete: bool = False,
    min_sim: float = 0.3,
) -> Ranker:
    """The served fusion (HybridIndex.search) with another trust or base weight."""

    def rank(a: Asked) -> list[int]:
        sim = SERVED_SIMILARITY(a)
        w = w0 + (1 - w0) * (1 - getattr(a, trust))
        scores = {i: (1 - w) * s + w * float(sim[i]) for i, s, _ in a.lexical}
        nearest = np.argsort(-sim, kind="stable")[:CANDIDATES].tolist()
        on_topic = bool(a.lexical) or float(sim[nearest[0]]) >= min_sim
        for i in nearest:
            if i not in scores and (sim[i] >= min_sim or (all_compete and on_topic)):
                scores[i] = w * float(sim[i])
        return _ranked(scores)

    return rank


def log_linear(weight: float, min_sim: float = 0.3) -> Ranker:
    def rank(a: Asked) -> list[int]:
        sim = SERVED_SIMILARITY(a)
        raw = {i: s for i, _, s in a.lexical}
        nearest = np.argsort(-sim, kind="stable")[:CANDIDATES].tolist()
        found = set(raw) | {i for i in nearest if sim[i] >= min_sim}
        return _ranked({i: COSINE_SCALE * float(sim[i]) + weight * raw.get(i, 0.0) for i in found})

    return rank


def rrf(a: Asked, min_sim: float = 0.3) -> list[int]:
    sim = SERVED_SIMILARITY(a)
    scores: dict[int, float] = {}
    for r, (i, _, _) in enumerate(a.lexical):
        scores[i] = 1 / (RRF_K + r + 1)
    for r, i in enumerate(np.argsort(-sim, kind="stable")[:CANDIDATES].tolist()):
        if sim[i] >= min_sim or i in scores:
            scores[i] = scores.get(i, 0.0) + 1 / (RRF_K + r + 1)
    return _ranked(scores)


def _ranked(scores: dict[int, float]) -> list[int]:
    return [i for i, _ in sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:20]]


def score(index: HybridIndex, asked: Sequence[Asked], rank: Ranker) -> tuple[float, float, float]:
    """R@1, MRR@10 and R@3 by document."""
    r1 = r3 = rr = 0.0
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
            r3 += found <= 3
    return r1 / len(asked), rr / len(asked), r3 / len(asked)


def folds(items: Sequence[Any]) -> list[list[Any]]:
    return [[x for n, x in enumerate(items) if n % FOLDS == f] for f in range(FOLDS)]


def cross_validate(
    kb: HybridIndex,
    para: Sequence[Asked],
    squad: HybridIndex,
    tune: Sequence[Asked],
    trust: str,
    grid: Sequence[float] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
) -> str:
    """The base weight chosen on four fifths of both sets (mean of hit@1 and R@1),
    scored on the fifth left out."""
    pf, sf = folds(para), folds(tune)
    table = {
        w: (
            [score(kb, f, fused(w, trust=trust))[0] for f in pf],
            [score(squad, f, fused(w, trust=trust))[0] for f in sf],
        )
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
    return (
        f"chosen {chosen}; left-out paraphrase hit@1 {statistics.mean(held_p):.3f} ± "
        f"{statistics.stdev(held_p):.3f} (min {min(held_p):.2f}), SQuAD R@1 "
        f"{statistics.mean(held_s):.3f} ± {statistics.stdev(held_s):.3f} "
        f"(min {min(held_s):.3f})"
    )


def main() -> None:
    embedder = load_embedder()
    if embedder is None:
        raise SystemExit("the semantic extra is not installed")
    kb = build(load_documents(DEFAULT_KNOWLEDGE_PATH), embedder)
    para_q = load_queries(PARAPHRASES)
    para = prepare(kb, para_q, embedder.embed([q.text for q in para_q]))
    docs, queries = load_eval(DEFAULT_DATA)
    tune_q = [q for q in queries if q.split == "tune"]
    squad = build(docs, embedder)
    tune = prepare(squad, tune_q, embedder.embed([q.text for q in tune_q]))

    print("| variant | SQuAD tune R@1 | MRR@10 | queries.jsonl hit@1 | hit@3 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    variants: list[tuple[str, Ranker]] = [
        (f"MiniLM alone, {name}", dense(sim)) for name, sim in SIMILARITIES.items()
    ]
    variants.append((f"hybrid as served (coverage trust, {DEFAULT_SEMANTIC_WEIGHT:g})", fused()))
    variants.append(("coverage trust, 0.5", fused(0.5)))
    variants += [
        (f"specificity trust, {w:g}", fused(w, trust="specific")) for w in (0.3, 0.4, 0.5, 0.6, 0.7)
    ]
    variants += [
        (f"specificity trust, all compete, {w:g}", fused(w, trust="specific", all_compete=True))
        for w in (0.4, 0.5)
    ]
    variants += [(f"mean-rarity trust, {w:g}", fused(w, trust="rare")) for w in (0.4, 0.5, 0.6)]
    variants += [(f"log-linear, BM25F × {x:g}", log_linear(x)) for x in (0.25, 0.5, 1.0)]
    variants.append(("reciprocal-rank fusion (k = 60)", rrf))
    for name, rank in variants:
        r1, mrr, _ = score(squad.index, tune, rank)
        hit1, _, hit3 = score(kb.index, para, rank)
        print(f"| {name} | {r1:.3f} | {mrr:.3f} | {hit1:.0%} | {hit3:.0%} |")

    print("\nBase fusion weight, 5-fold CV over both sets (mean of the two):")
    for trust in ("specific", "coverage"):
        print(f"- {trust} trust: " + cross_validate(kb.index, para, squad.index, tune, trust))


if __name__ == "__main__":
    main()
