"""The knowledge base: reading files, validating entries, splitting passages, the shipped KB."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.answers.knowledge import (
    DEFAULT_KNOWLEDGE_PATH,
    Document,
    Passage,
    load_documents,
    parse_documents,
    split_passages,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_array_with_missing_and_numeric_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.json",
        json.dumps(
            [
                {"id": "intro", "topic": "Intro", "content": "Hello."},
                {"topic": "Second", "content": "No id here."},
                {"id": 7, "topic": "Seven", "content": "Numeric id."},
            ]
        ),
    )
    docs = load_documents(path)
    assert docs == [
        Document("intro", "Intro", "Hello."),
        Document("2", "Second", "No id here."),
        Document("7", "Seven", "Numeric id."),
    ]
    assert all(isinstance(d.id, str) for d in docs)


def test_json_lines_skips_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.jsonl",
        '{"topic": "A", "content": "first"}\n\n{"id": "b", "topic": "B", "content": "second"}\n'
        '{"topic": "C", "content": "third"}\n',
    )
    assert [d.id for d in load_documents(path)] == ["1", "b", "3"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "x", "content": "no topic"}, "topic"),
        ({"id": "x", "topic": "T"}, "content"),
        ({"id": "x", "topic": "T", "content": "   "}, "content"),
        ({"id": True, "topic": "T", "content": "c"}, "id"),
        ({"id": "a#1", "topic": "T", "content": "c"}, "'#'"),
        (["not", "an", "object"], "object"),
    ],
)
def test_bad_entry_names_file_and_entry(tmp_path: Path, entry: object, message: str) -> None:
    good = {"id": "ok", "topic": "T", "content": "fine"}
    path = write(tmp_path, "bad.json", json.dumps([good, entry]))
    with pytest.raises(ValueError, match=message) as info:
        load_documents(path)
    assert str(path) in str(info.value)
    assert "entry 2" in str(info.value)


def test_bad_json_lines_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", '{"topic": "A", "content": "a"}\n\n{"topic": oops}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 3 \(entry 2\)"):
        load_documents(path)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    # The second entry has no id, so it is "2", which the first already claims.
    with pytest.raises(ValueError, match="duplicate id '2'"):
        parse_documents([{"id": "2", "topic": "A", "content": "a"}, {"topic": "B", "content": "b"}])


def test_json_that_is_not_an_array(tmp_path: Path) -> None:
    path = write(tmp_path, "kb.json", "[1, 2")
    with pytest.raises(ValueError, match=r"kb\.json: not valid JSON"):
        load_documents(path)


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_short_document_is_one_passage_with_the_document_id() -> None:
    doc = Document("faq", "FAQ", "A short answer. Two sentences.")
    assert split_passages([doc]) == [Passage("faq", "faq", "FAQ", doc.content)]


def test_long_document_splits_on_sentences_into_balanced_passages() -> None:
    sentences = [f"{words(25, 25 * i).capitalize()}." for i in range(12)]  # 300 words
    doc = Document("long", "Long", " ".join(sentences))
    passages = split_passages([doc], max_words=200)
    assert [p.id for p in passages] == ["long#1", "long#2"]
    assert all(p.doc_id == "long" and p.topic == "Long" for p in passages)
    counts = [len(p.text.split()) for p in passages]
    assert counts == [150, 150]
    assert all(p.text.endswith(".") for p in passages)  # cut between sentences
    assert " ".join(p.text for p in passages).split() == doc.content.split()


def test_paragraph_boundaries_are_kept() -> None:
    para = " ".join(f"{words(20, 20 * i).capitalize()}." for i in range(4))  # 80 words
    content = "\n\n".join([para, para.upper(), para.title()])  # 240 words, 3 paragraphs
    passages = split_passages([Document("d", "T", content)], max_words=100)
    assert len(passages) == 3
    assert [p.text for p in passages] == [para, para.upper(), para.title()]


def test_every_passage_respects_max_words_even_with_a_huge_sentence() -> None:
    doc = Document("d", "T", words(450))  # one "sentence" with no full stop
    passages = split_passages([doc], max_words=200)
    assert [len(p.text.split()) for p in passages] == [200, 200, 50]
    assert [p.id for p in passages] == ["d#1", "d#2", "d#3"]


def test_abbreviation_does_not_end_a_sentence() -> None:
    sentence = "Use a proxy, e.g. nginx in front of it, " + words(90) + "."
    doc = Document("d", "T", f"{sentence} {sentence}")
    passages = split_passages([doc], max_words=120)
    assert [p.text for p in passages] == [sentence, sentence]


# --- the knowledge base shipped with the server ---------------------------------------------

CONTRACT_SETTINGS = [
    "HOST",
    "PORT",
    "DATABASE_URL",
    "SECRET_KEY",
    "ALGORITHM",
    "ACCESS_TOKEN_EXPIRE_MINUTES",
    "OPENAI_API_KEY",
    "ALLOWED_ORIGINS",
    "LLM_TOKEN_DELAY_MS",
    "HISTORY_RETENTION_DAYS",
    "PURGE_CRON",
    "REQUIRE_VERIFIED_EMAIL",
    "KNOWLEDGE_PATH",
    "CHAT_RATE_PER_MINUTE",
    "MAX_CONNECTIONS_PER_USER",
]


def test_shipped_knowledge_base_loads_and_covers_the_contract() -> None:
    docs = load_documents(DEFAULT_KNOWLEDGE_PATH)
    assert len(docs) >= 30
    text = "\n".join(f"{d.topic}\n{d.content}" for d in docs)
    for name in CONTRACT_SETTINGS:
        assert re.search(rf"\b{name}\b", text), name
    assert (
        '<script src="https://CHAT-SERVER/static/widget.js" '
        'data-server="https://CHAT-SERVER" defer></script>'
    ) in text
    for path in ["/api/v1/auth/signup", "/api/v1/chat/chat-history", "/api/v1/chat/ws"]:
        assert path in text
    for frame in ["ready", "ack", "start", "token", "end", "cancel", "resume"]:
        assert f'"type":"{frame}"' in text, frame
    assert len({d.topic for d in docs}) == len(docs)
