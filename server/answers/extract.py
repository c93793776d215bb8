"""Extractive answers: the sentences of the retrieved passages that answer a question.

Pure and synchronous. The mock LLM answers with these sentences instead of whole
passages, so "who won?" gets a sentence, not a paragraph.

Scoring (``ExtractParams``), for each sentence of the best ``passages`` hits:

* BM25 over sentences: the question's terms (the retriever's analysis: stop
  words out, Snowball stems) weighted by their idf among these sentences, with
  term-frequency saturation ``k1`` and length normalisation ``b``, so a short
  sentence that holds the rare question words wins over a long one that holds
  common ones;
* the passage's rank: ``rank_weight`` times the hit's score relative to the best
  hit's, so a sentence of the best passage wins a near tie;
* the neighbours: ``neighbour_weight`` times the scores of the sentences just
  before and after, because an answer sentence often continues one that names
  the subject ("The game was played… It was the first…");
* the question word: ``type_weight`` when the sentence has what the question asks
  for: a number for "how many / how much", a year or date for "when / what year",
  a capitalised name not in the question for "who".

The answer is the best sentence, plus the second best when that scores at least
``second_ratio`` of the best and the two together stay within ``max_words``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .retriever import Analyzer, Hit
from .sentences import split_sentences

# Chosen by 5-fold cross-validation on the "tune" half of the SQuAD-derived set
# (bench/retrieval_eval.py --cv); the spread across folds is in the README.
DEFAULT_PASSAGES = 2
DEFAULT_K1 = 1.2
DEFAULT_B = 0.5
DEFAULT_RANK_WEIGHT = 2.0
DEFAULT_NEIGHBOUR_WEIGHT = 0.1
DEFAULT_TYPE_WEIGHT = 1.0
DEFAULT_SECOND_RATIO = 0.8
DEFAULT_MAX_WORDS = 60


@dataclass(frozen=True, slots=True)
class ExtractParams:
    passages: int = DEFAULT_PASSAGES
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    rank_weight: float = DEFAULT_RANK_WEIGHT
    neighbour_weight: float = DEFAULT_NEIGHBOUR_WEIGHT
    type_weight: float = DEFAULT_TYPE_WEIGHT
    second_ratio: float = DEFAULT_SECOND_RATIO
    max_words: int = DEFAULT_MAX_WORDS


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence of a hit's passage and its score for the question."""

    text: str
    hit: Hit
    position: int  # its place among the sentences of its passage
    score: float


_YEAR = re.compile(r"\b(1\d{3}|20\d{2})s?\b")
_MONTH = re.compile(
    r"\b(January|February|March|April|May|June|July|August|September|October|November"
    r"|December|century|centuries)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(
    r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty"
    r"|forty|fifty|hundred|thousand|million|billion|dozen)\b",
    re.IGNORECASE,
)
_ASKS_NUMBER = re.compile(
    r"\bhow (many|much|long|far|old|large|big|tall|high)\b|\bwhat (percentage|number|amount)\b"
)
_ASKS_DATE = re.compile(
    r"\bwhen\b|\bwhat (year|date|day|month|century|decade)\b|\bwhich (year|century)\b"
)
_ASKS_PERSON = re.compile(r"^\s*(who|whom|whose)\b|\bby whom\b")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w'’-]+")


def question_type(question: str) -> str | None:
    """ "number", "date", "person" or None: what kind of answer the question asks for."""
    q = question.lower()
    if _ASKS_NUMBER.search(q):
        return "number"
    if _ASKS_DATE.search(q):
        return "date"
    if _ASKS_PERSON.search(q):
        return "person"
    return None


def _has_type(kind: str | None, sentence: str, question: str) -> bool:
    if kind == "number":
        return bool(_NUMBER.search(sentence))
    if kind == "date":
        return bool(_YEAR.search(sentence) or _MONTH.search(sentence))
    if kind == "person":
        asked = {w.lower() for w in re.findall(r"\w+", question)}
        return any(m.group().lower() not in asked for m in _NAME.finditer(sentence))
    return False


def best_sentences(
    question: str,
    hits: Sequence[Hit],
    analyzer: Analyzer,
    params: ExtractParams | None = None,
) -> list[Sentence]:
    """The sentences that answer ``question`` (one or two, in passage order within
    the answer), or [] when no sentence shares a term with the question."""
    params = params or ExtractParams()
    top = hits[: params.passages]
    if not top:
        return []
    query = set(analyzer.terms(question))
    if not query:
        return []
    kind = question_type(question)
    units: list[tuple[str, Hit, int, Counter[str], int]] = []
    for hit in top:
        for n, text in enumerate(split_sentences(hit.passage.text)):
            terms = analyzer.terms(text)
            units.append((text, hit, n, Counter(terms), len(terms)))
    total = len(units)
    df = Counter(t for _, _, _, tf, _ in units for t in query if t in tf)
    idf = {t: math.log(1 + (total - n + 0.5) / (n + 0.5)) for t, n in df.items()}
    avg = (sum(u[4] for u in units) / total) or 1.0
    best_hit = top[0].score or 1.0

    base: list[float] = []
    for _, _, _, tf, length in units:
        norm = params.k1 * (1 - params.b + params.b * length / avg)
        lexical = sum(idf[t] * tf[t] * (params.k1 + 1) / (tf[t] + norm) for t in idf if t in tf)
        base.append(lexical)
    scored: list[Sentence] = []
    for i, (text, hit, n, _, _) in enumerate(units):
        if base[i] <= 0:
            continue
        score = base[i] + params.rank_weight * hit.score / best_hit
        for j in (i - 1, i + 1):
            if 0 <= j < total and units[j][1] is hit:
                score += params.neighbour_weight * base[j]
        if kind and _has_type(kind, text, question):
            score += params.type_weight
        scored.append(Sentence(text, hit, n, score))
    if not scored:
        return []
    scored.sort(key=lambda s: -s.score)
    first = scored[0]
    answer = [first]
    if len(scored) > 1:
        second = scored[1]
        words = len(first.text.split()) + len(second.text.split())
        if second.score >= params.second_ratio * first.score and words <= params.max_words:
            answer.append(second)
    # Sentences of one passage read in their own order.
    answer.sort(key=lambda s: (hits.index(s.hit), s.position))
    return answer
