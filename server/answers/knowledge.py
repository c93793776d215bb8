"""The knowledge base: documents, how they are read from a file, and passages.

A document is what an operator writes (one topic, some prose). A passage is what
the retriever ranks and the reply cites: a short document is one passage with the
document's id; a long one is split on paragraph and sentence boundaries into
passages of about 120-200 words, ids ``"<doc_id>#<n>"`` from 1, so that a hit
points at the part of a long document that answers, not at all of it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_WORDS = 200
# The knowledge base shipped with the server (about the server itself).
DEFAULT_KNOWLEDGE_PATH = Path(__file__).with_name("knowledge.json")


@dataclass(frozen=True, slots=True)
class Document:
    """One knowledge-base entry, as written by an operator."""

    id: str
    topic: str
    content: str


@dataclass(frozen=True, slots=True)
class Passage:
    """The unit the retriever ranks: a whole short document or a part of a long one."""

    id: str
    doc_id: str
    topic: str
    text: str


# --- reading ---------------------------------------------------------------------------


def load_documents(path: str | Path) -> list[Document]:
    """Read a knowledge-base file: a JSON array or JSON Lines of ``{"id","topic","content"}``.

    An entry without ``id`` (or with ``null``) gets its 1-based position in the file;
    numeric ids become strings.

    Raises:
        ValueError: the file is not valid JSON / JSON Lines, or an entry is bad; the
            message names the file and the entry (and the line, for JSON Lines).
        OSError: the file cannot be read.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of documents")
        return parse_documents(data, source=str(path))

    entries: list[object] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: line {lineno} (entry {len(entries) + 1}): not valid JSON: {exc}"
            ) from None
        lines.append(lineno)
    return parse_documents(entries, source=str(path), lines=lines)


def parse_documents(
    entries: Iterable[object], *, source: str = "<documents>", lines: Sequence[int] = ()
) -> list[Document]:
    """Validate decoded entries into documents (the part of ``load_documents`` after JSON).

    ``source`` names where the entries came from in error messages; ``lines`` optionally
    gives each entry's line number.

    Raises:
        ValueError: an entry is not an object, lacks a text ``topic`` / ``content``,
            has an id that is not a string or integer, or repeats an id.
    """
    docs: list[Document] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        where = f"{source}: entry {position}"
        if position <= len(lines):
            where += f" (line {lines[position - 1]})"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with topic and content")
        raw_id = entry.get("id")
        if raw_id is None:
            doc_id = str(position)
        elif isinstance(raw_id, str) and raw_id.strip():
            doc_id = raw_id.strip()
        elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
            doc_id = str(raw_id)
        else:
            raise ValueError(f"{where}: id must be a non-empty string or an integer")
        if "#" in doc_id:
            raise ValueError(f"{where}: id {doc_id!r} must not contain '#' (used by passage ids)")
        topic = entry.get("topic")
        content = entry.get("content")
        if not isinstance(topic, str) or not topic.strip():
            raise ValueError(f"{where}: topic must be a non-empty string")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"{where}: content must be a non-empty string")
        if doc_id in seen:
            raise ValueError(f"{where}: duplicate id {doc_id!r}")
        seen.add(doc_id)
        docs.append(Document(id=doc_id, topic=topic.strip(), content=content.strip()))
    return docs


# --- splitting -------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends at . ! ? or … (plus closing quotes/brackets) followed by space and
# something that is not a lowercase letter, so "e.g. the" stays one sentence.
_SENTENCE_END = re.compile(r"[.!?…]+[\"”’')\]]*(?=\s+(?![a-z]))")


def split_passages(docs: Iterable[Document], max_words: int = DEFAULT_MAX_WORDS) -> list[Passage]:
    """Split documents into passages of at most ``max_words`` words (a sentence longer
    than that is cut between words).

    A document of at most ``max_words`` words stays whole, with the document's id. A
    longer one is cut on paragraph, then sentence boundaries into the fewest passages
    that fit, balanced in length (so 250 words become two of ~125, not 200 + 50);
    passage ids are ``"<doc_id>#1"``, ``"#2"`` …
    """
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    passages: list[Passage] = []
    for doc in docs:
        chunks = _chunk(doc.content, max_words)
        if len(chunks) == 1:
            passages.append(Passage(doc.id, doc.id, doc.topic, doc.content))
        else:
            passages.extend(
                Passage(f"{doc.id}#{n}", doc.id, doc.topic, chunk)
                for n, chunk in enumerate(chunks, start=1)
            )
    return passages


def _chunk(content: str, max_words: int) -> list[str]:
    total = len(content.split())
    if total <= max_words:
        return [content]
    # Units: (text, word count, starts a paragraph).
    units: list[tuple[str, int, bool]] = []
    for paragraph in _PARAGRAPH_BREAK.split(content):
        paragraph = " ".join(paragraph.split())
        first = True
        for sentence in _sentences(paragraph):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                piece = words[start : start + max_words]
                units.append((" ".join(piece), len(piece), first))
                first = False
    target = total / math.ceil(total / max_words)
    chunks: list[list[tuple[str, int, bool]]] = [[]]
    count = 0
    for unit in units:
        if chunks[-1] and (count + unit[1] > max_words or count >= target):
            chunks.append([])
            count = 0
        chunks[-1].append(unit)
        count += unit[1]
    return [_join(chunk) for chunk in chunks]


def _sentences(paragraph: str) -> list[str]:
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        out.append(paragraph[start : match.end()].strip())
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def _join(units: list[tuple[str, int, bool]]) -> str:
    text = units[0][0]
    for unit_text, _, new_paragraph in units[1:]:
        text += ("\n\n" if new_paragraph else " ") + unit_text
    return text
