"""Ranking knowledge-base passages for a question: BM25F over topic and content.

Pure and synchronous: text in, ranked hits out, no I/O. ``Index.build`` analyses
every passage once and precomputes each (term, passage) BM25F weight, so a search
is a few dictionary walks over the query terms' postings.

Analysis (the same for passages and questions):

* words are lowercased, Unicode-aware runs of letters and digits; Latin accents are
  folded (``Beyoncé`` = ``beyonce``); ``1,000`` = ``1000``; ``U.S.`` = ``us``;
* apostrophes: a contraction that is a stop word is dropped, a possessive ``'s`` is
  cut (``Levi's`` → ``levi``), other apostrophes are removed (``O'Neill`` → ``oneill``);
* hyphenated words give their parts and the joined word (``e-mail`` → ``e``,
  ``mail``, ``email``), so either spelling matches;
* English stop words are removed and the rest stemmed with Snowball
  (``running`` and ``runs`` → ``run``);
* adjacent content terms also form a bigram term (``los angel``), weighted lower, so
  that a passage containing a question's phrase ranks above one with the same words
  scattered.

Scoring is BM25F (Robertson & Zaragoza, "The Probabilistic Relevance Framework",
2009): per-field term frequencies are length-normalised, weighted (the topic counts
``topic_weight`` times a content word) and summed before one saturation with ``k1``.

"Found" means two thresholds (``Params``): a score of at least ``min_score``, and
matching words that carry at least ``min_coverage`` of the question's idf mass, so a
question about something else that shares one incidental word finds nothing.
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType

import Stemmer

from .knowledge import Passage
from .stopwords import ENGLISH_STOP_WORDS

# Defaults tuned on half of the SQuAD-derived evaluation set (bench/retrieval_eval.py)
# and checked on the other half; all are generic BM25F knobs, none names a query. k1 is
# the one 5-fold cross-validation within that half moved (0.9 -> 0.45: every fold
# chose it; `--cv` shows the others' choices, whose joint effect was under 0.001 R@1).
DEFAULT_K1 = 0.45
DEFAULT_B = 0.75
DEFAULT_TOPIC_WEIGHT = 2.0
DEFAULT_TOPIC_B = 0.3
DEFAULT_BIGRAM_WEIGHT = 0.5
# A passage scoring below this is not "found". In BM25 units one matched word is
# worth about its idf = ln(1 + (N - n + 0.5) / (n + 0.5)) for a word in n of N
# passages, which is 1.0 for a word in ~37 % of them; 0.5 keeps a passage matched
# only on words that most passages share (e.g. a single "server") out.
DEFAULT_MIN_SCORE = 0.5
# A passage must also match query words carrying this share of the question's total
# idf (a word found in no passage has the highest idf), so one incidental word out of
# a question about something else ("what is the weather *like* in Paris") is not a
# match. On the evaluation set no correct first hit has a share below 0.3.
DEFAULT_MIN_COVERAGE = 0.3

_STEM_CACHE_LIMIT = 200_000

_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)+"  # 1,000 / 3.5 / 10.0.1
    r"|(?:[^\W\d_]\.){2,}"  # U.S. / e.g.
    r"|[^\W_]+(?:['’\-][^\W_]+)*"  # words, with inner apostrophes and hyphens
)


@dataclass(frozen=True, slots=True)
class Hit:
    """A passage and its score for one question (higher is better)."""

    passage: Passage
    score: float


@dataclass(frozen=True, slots=True)
class Params:
    """The ranking knobs; see the module docstring and ``Index.build``."""

    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    topic_weight: float = DEFAULT_TOPIC_WEIGHT
    topic_b: float = DEFAULT_TOPIC_B
    bigram_weight: float = DEFAULT_BIGRAM_WEIGHT
    min_score: float = DEFAULT_MIN_SCORE
    min_coverage: float = DEFAULT_MIN_COVERAGE

    def __post_init__(self) -> None:
        if self.k1 <= 0:
            raise ValueError("k1 must be positive")
        if not (0 <= self.b <= 1 and 0 <= self.topic_b <= 1):
            raise ValueError("b and topic_b must be within 0..1")
        if not 0 <= self.min_coverage <= 1:
            raise ValueError("min_coverage must be within 0..1")
        if self.topic_weight < 0 or self.bigram_weight < 0:
            raise ValueError("weights must not be negative")


# --- analysis ----------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Split text into lowercase words (stop words kept, nothing stemmed)."""
    words: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        if not token.isascii():
            token = _fold(token)
        first = token[0]
        if first.isdigit():
            words.append(token.replace(",", ""))
        elif "." in token:  # an acronym: u.s. -> us
            words.append(token.replace(".", ""))
        elif "'" in token or "’" in token or "-" in token:
            words.extend(_split_compound(token.replace("’", "'")))
        else:
            words.append(token)
    return words


def _fold(token: str) -> str:
    """Strip accents from Latin letters; leave other scripts as they are."""
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", token) if not unicodedata.combining(c)
    )
    return stripped if stripped.isascii() else unicodedata.normalize("NFKC", token)


def _split_compound(token: str) -> list[str]:
    out: list[str] = []
    parts = token.split("-")
    for part in parts:
        if "'" in part and part not in ENGLISH_STOP_WORDS:
            if part.endswith("'s"):
                part = part[:-2]
            part = part.replace("'", "")
        out.append(part)
    if len(parts) > 1:
        out.append("".join(out))
    return [p for p in out if p]


class Analyzer:
    """Turns text into index terms: tokens minus stop words, stemmed (with a memo)."""

    __slots__ = ("_cache", "_stemmer")

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._cache: dict[str, str] = {}

    def terms(self, text: str) -> list[str]:
        cache = self._cache
        out: list[str] = []
        for word in tokenize(text):
            stem = cache.get(word)
            if stem is None:
                stem = "" if word in ENGLISH_STOP_WORDS else self._stemmer.stemWord(word) or word
                if len(cache) < _STEM_CACHE_LIMIT:
                    cache[word] = stem
            if stem:
                out.append(stem)
        return out


def _bigrams(terms: Sequence[str]) -> list[str]:
    return [f"{a} {b}" for a, b in pairwise(terms)]


# --- the index -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Index:
    """An immutable BM25F index over passages. Build with ``Index.build``.

    Safe to share between threads: nothing in it changes after ``build`` (but for
    the analyser's stem memo), so a new index can be built in a worker thread and
    swapped in while this one keeps answering.
    """

    passages: tuple[Passage, ...]
    params: Params
    # term -> {passage number: precomputed BM25F weight (idf included)}
    _postings: MappingProxyType[str, dict[int, float]] = field(repr=False)
    # single term -> idf, for the coverage check; unknown terms get _unknown_idf
    _idf: MappingProxyType[str, float] = field(repr=False)
    _unknown_idf: float = field(repr=False)
    _analyzer: Analyzer = field(repr=False)
    _number: MappingProxyType[str, int] = field(repr=False)

    @classmethod
    def build(cls, passages: Iterable[Passage], **params: float) -> Index:
        """Index ``passages``; keyword ``params`` are those of ``Params``:

        k1 (0.45): term-frequency saturation; b (0.75) and topic_b (0.3): how much the
        content's / topic's length normalises its term counts; topic_weight (2.0): a
        topic word counts as that many content words; bigram_weight (0.5): the weight
        of an adjacent pair of terms relative to single terms (0 turns bigrams off);
        min_score (0.5) and min_coverage (0.3): hits scoring below min_score, or matching
        less than min_coverage of the question's idf mass, are not returned.
        """
        p = Params(**params)
        passages = tuple(passages)
        analyzer = Analyzer()
        n = len(passages)

        topic_tfs: list[Counter[str]] = []
        content_tfs: list[Counter[str]] = []
        topic_lens: list[int] = []
        content_lens: list[int] = []
        topic_memo: dict[str, tuple[Counter[str], int]] = {}
        for passage in passages:
            memo = topic_memo.get(passage.topic)
            if memo is None:
                t_terms = analyzer.terms(passage.topic)
                memo = topic_memo[passage.topic] = (Counter(t_terms), len(t_terms))
            topic_tfs.append(memo[0])
            topic_lens.append(memo[1])
            c_terms = analyzer.terms(passage.text)
            tf = Counter(c_terms)
            if p.bigram_weight:
                tf.update(_bigrams(c_terms))
            content_tfs.append(tf)
            content_lens.append(len(c_terms))

        avg_topic = ((sum(topic_lens) / n) or 1.0) if n else 1.0
        avg_content = ((sum(content_lens) / n) or 1.0) if n else 1.0
        k1 = p.k1

        # Per passage: term -> weighted, length-normalised frequency over both fields.
        postings: dict[str, dict[int, float]] = {}
        for i in range(n):
            t_norm = p.topic_weight / (1 - p.topic_b + p.topic_b * topic_lens[i] / avg_topic)
            c_norm = 1.0 / (1 - p.b + p.b * content_lens[i] / avg_content)
            combined: dict[str, float] = {}
            for term, count in content_tfs[i].items():
                scale = p.bigram_weight if " " in term else 1.0
                combined[term] = count * c_norm * scale
            for term, count in topic_tfs[i].items():
                combined[term] = combined.get(term, 0.0) + count * t_norm
            for term, tfw in combined.items():
                if tfw <= 0:  # a field weighted 0 adds no evidence
                    continue
                saturation = tfw * (k1 + 1) / (k1 + tfw)
                postings.setdefault(term, {})[i] = saturation

        idfs: dict[str, float] = {}
        for term, plist in postings.items():
            df = len(plist)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            if " " in term:
                idf *= p.bigram_weight
            else:
                idfs[term] = idf
            for i in plist:
                plist[i] *= idf

        unknown_idf = math.log(1 + (n + 0.5) / 0.5)
        number = MappingProxyType({passage.id: i for i, passage in enumerate(passages)})
        return cls(
            passages,
            p,
            MappingProxyType(postings),
            MappingProxyType(idfs),
            unknown_idf,
            analyzer,
            number,
        )

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The best ``k`` passages for ``query``, best first; only those scoring at
        least ``params.min_score`` and covering ``params.min_coverage`` of the query.
        Ties keep passage order. A query of only stop words (or unknown words) finds
        nothing."""
        if k <= 0:
            return []
        single = list(dict.fromkeys(self._analyzer.terms(query)))
        terms = single + _bigrams(single) if self.params.bigram_weight else single
        lists = [self._postings[t] for t in dict.fromkeys(terms) if t in self._postings]
        if not lists:
            return []
        # Start from a copy of the longest list (a C-speed copy) and add the rest.
        lists.sort(key=len, reverse=True)
        scores = dict(lists[0])
        get = scores.get
        for plist in lists[1:]:
            for i, w in plist.items():
                scores[i] = get(i, 0.0) + w
        floor = self.params.min_score
        needed = self.params.min_coverage * sum(self._idf_of(t) for t in single)
        weights = [(self._postings.get(t), self._idf_of(t)) for t in single]
        # The best k by score, minus those below either threshold (not refilled from
        # further down: a passage that ranks below a weak one is no better an answer).
        best = heapq.nlargest(k, scores.items(), key=lambda item: (item[1], -item[0]))
        hits: list[Hit] = []
        for i, score in best:
            if score < floor:
                break
            covered = sum(idf for plist, idf in weights if plist is not None and i in plist)
            if covered >= needed - 1e-9:
                hits.append(Hit(self.passages[i], score))
        return hits

    def idf_mass(self, query: str) -> float:
        """The summed idf of the question's distinct terms (unknown ones included):
        what a passage matching every term once would score, about. Hybrid
        retrieval divides BM25F scores by it to put them on a 0..1-ish scale."""
        return sum(self._idf_of(t) for t in dict.fromkeys(self._analyzer.terms(query)))

    def position(self, passage: Passage) -> int:
        """Where ``passage`` (one of this index's) is in ``passages``."""
        return self._number[passage.id]

    def coverage(self, query: str, passage: Passage) -> float:
        """The share of the question's idf mass that ``passage`` (one of this index's)
        matches: 1.0 when it holds every question term."""
        matched, mass = self._matched_idfs(query, passage)
        return sum(matched) / mass if mass else 0.0

    def specificity(self, query: str, passage: Passage) -> float:
        """How much BM25F's match of ``passage`` says: its ``coverage`` times the idf
        of its most common matched word over the largest idf a word can have here (a
        word of one passage). Why: in a small knowledge base a question can match
        every one of its words ("send", "token", "call") in a passage that is not the
        answer, because many passages share them; such a match is weak evidence
        however much of the question it covers. 1.0 only when every question word is
        matched and each is found in no other passage. Measured as the hybrid's trust
        in BM25F (bench/fusion_variants.py); not served: it did not hold on the
        held-out sets."""
        matched, mass = self._matched_idfs(query, passage)
        if not matched or not mass:
            return 0.0
        n = len(self.passages)
        rarest_possible = math.log(1 + (n - 0.5) / 1.5)
        return sum(matched) / mass * min(1.0, min(matched) / rarest_possible)

    def _matched_idfs(self, query: str, passage: Passage) -> tuple[list[float], float]:
        """The idfs of the question's distinct terms that ``passage`` holds, and the
        question's idf mass."""
        terms = list(dict.fromkeys(self._analyzer.terms(query)))
        i = self.position(passage)
        postings = self._postings
        matched = [self._idf_of(t) for t in terms if i in postings.get(t, ())]
        return matched, sum(self._idf_of(t) for t in terms)

    def _idf_of(self, term: str) -> float:
        return self._idf.get(term, self._unknown_idf)


# --- the original design's ranking, for comparison only --------------------------------------


def keyword_baseline(passages: Sequence[Passage]):
    """The original design's matcher, kept to measure against (bench/retrieval_eval.py).

    Stop words are removed from the question; passages are ranked by how many of its
    distinct remaining words occur in their topic or text (no stemming), ties by
    passage order. Returns ``search(query, k) -> list[Hit]``.
    """
    words = [frozenset(tokenize(f"{p.topic} {p.text}")) - ENGLISH_STOP_WORDS for p in passages]

    def search(query: str, k: int = 5) -> list[Hit]:
        keywords = set(tokenize(query)) - ENGLISH_STOP_WORDS
        if not keywords:
            return []
        scored = [(len(keywords & w), i) for i, w in enumerate(words)]
        best = heapq.nsmallest(k, ((-s, i) for s, i in scored if s))
        return [Hit(passages[i], float(-s)) for s, i in best]

    return search
