"""Sentence splitting: abbreviations, initials, decimals, quotes, paragraphs."""

from __future__ import annotations

import pytest

from server.answers.sentences import sentence_spans, split_sentences


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Dr. Smith paid 3.5 dollars. He left.", ["Dr. Smith paid 3.5 dollars.", "He left."]),
        (
            "The U.S. Army won. J. R. R. Tolkien wrote.",
            ["The U.S. Army won.", "J. R. R. Tolkien wrote."],
        ),
        (
            "Use a proxy, e.g. nginx. Version 10.0.1 works.",
            ["Use a proxy, e.g. nginx.", "Version 10.0.1 works."],
        ),
        ("At 3 p.m. the next day. Then.", ["At 3 p.m. the next day.", "Then."]),
        ('He said "Stop." Then he did.', ['He said "Stop."', "Then he did."]),
        ("(It was 1999.) Done", ["(It was 1999.)", "Done"]),
        ("Was it “fun?” Yes… Indeed.", ["Was it “fun?”", "Yes…", "Indeed."]),
        ("It began in Jan. 2015 and ended.", ["It began in Jan. 2015 and ended."]),
        ("Paid 1,000 dollars. 2016 was next.", ["Paid 1,000 dollars.", "2016 was next."]),
        (
            "First paragraph without a stop\n\nsecond one.",
            ["First paragraph without a stop", "second one."],
        ),
        (
            "lowercase after. a point does not end it.",
            ["lowercase after. a point does not end it."],
        ),
        ("Québec is big. Ébène next.", ["Québec is big.", "Ébène next."]),
        ("", []),
        ("   \n\n  ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_spans_point_into_the_text() -> None:
    text = "  Alpha beta.  Gamma?\n\n Delta. "
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["Alpha beta.", "Gamma?", "Delta."]
    assert spans == sorted(spans)
