"""Splitting prose into sentences, for extractive answers and sentence embeddings.

A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or
brackets after it) when whitespace and then a sentence start follow (a capital,
a digit, an opening quote or bracket), and at a paragraph break. Not an end:

* a decimal or version (``3.5``, ``10.0.1``): no whitespace after the point;
* a known abbreviation (``Dr.``, ``e.g.``, ``U.S.``, ``Jan.``, ``approx.`` …) or a
  single initial (``J. R. R. Tolkien``);
* a point followed by a lowercase word (``… at 3 p.m. the next day``).

Sentences keep their text exactly as written (``"".join`` of the spans with the
gaps gives the paragraph back), so an answer quotes the knowledge base.
"""

from __future__ import annotations

import re

# Lowercased, without the final point. Titles, Latin, months, units and common
# shortenings: the abbreviations that are usually followed by a capital.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof rev gen col lt sgt capt cmdr adm gov sen rep pres st mt ft jr sr
    sra sta no nos vol vols pp fig figs eq ed eds inc ltd co corp bros dept univ assn
    est approx ca cf vs etc al e.g i.e viz a.m p.m u.s u.k u.n e.u d.c b.c a.d
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
    """.split()  # noqa: SIM905 (a list literal of 80 strings reads worse)
)

_END = re.compile(
    r"""[.!?…]+["'”’)\]]*"""  # the end mark, then closing quotes or brackets
    r"""(?=\s+["'“‘(\[]?[\dA-Z\u00C0-\u024F\u0370-\u1FFF])"""  # space, a sentence start
)
_PARAGRAPH = re.compile(r"\n\s*\n")
_LAST_WORD = re.compile(r"([^\s(\[\"'“‘]+)$")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, in order; a paragraph break always ends one."""
    return [text[start:end] for start, end in sentence_spans(text)]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of ``text`` (no surrounding whitespace)."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for paragraph in _PARAGRAPH.split(text):
        base = text.index(paragraph, offset) if paragraph else offset
        offset = base + len(paragraph)
        start = 0
        for match in _END.finditer(paragraph):
            if match.group()[0] == "." and _is_abbreviation(paragraph[start : match.start()]):
                continue
            spans.append((base + start, base + match.end()))
            start = match.end()
        spans.append((base + start, base + len(paragraph)))
    out = []
    for start, end in spans:
        chunk = text[start:end]
        stripped = chunk.strip()
        if stripped:
            lead = len(chunk) - len(chunk.lstrip())
            out.append((start + lead, start + lead + len(stripped)))
    return out


def _is_abbreviation(before: str) -> bool:
    """Whether the word just before a point is an abbreviation or an initial."""
    match = _LAST_WORD.search(before)
    if match is None:
        return False
    word = match.group(1)
    if len(word) == 1 and word.isalpha():  # an initial: "J. Smith"
        return word.isupper()
    return word.lower() in ABBREVIATIONS
