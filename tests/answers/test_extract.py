"""Extractive answers: sentence scoring, the question word, two sentences at most."""

from __future__ import annotations

import pytest

from server.answers.extract import ExtractParams, best_sentences, question_type
from server.answers.knowledge import Passage
from server.answers.retriever import Analyzer, Hit

ANALYZER = Analyzer()

GAME = Hit(
    Passage(
        "game",
        "game",
        "Super Bowl 50",
        "Super Bowl 50 was an American football game. The Denver Broncos defeated the "
        "Carolina Panthers 24–10. The game was played on February 7, 2016, at Levi's Stadium. "
        "The stadium holds 68,500 people.",
    ),
    9.0,
)
OTHER = Hit(Passage("other", "other", "Stadiums", "Levi's Stadium opened in 2014."), 4.0)


def texts(question: str, hits: list[Hit], **params: float) -> list[str]:
    return [s.text for s in best_sentences(question, hits, ANALYZER, ExtractParams(**params))]


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How many people does it hold?", "number"),
        ("how much did it cost", "number"),
        ("When was the game played?", "date"),
        ("In what year did it open?", "date"),
        ("Who won the game?", "person"),
        ("Whose team lost?", "person"),
        ("Where was it played?", None),
        ("What is a widget?", None),
    ],
)
def test_question_type(question: str, kind: str | None) -> None:
    assert question_type(question) == kind


def test_the_sentence_with_the_rare_question_words_answers() -> None:
    assert texts("Who did the Broncos defeat?", [GAME]) == [
        "The Denver Broncos defeated the Carolina Panthers 24–10."
    ]


def test_a_date_question_prefers_the_sentence_with_a_date() -> None:
    # "game" is in three sentences; the one with a date answers "when".
    assert texts("When was the game?", [GAME], second_ratio=1.01) == [
        "The game was played on February 7, 2016, at Levi's Stadium."
    ]
    # Without the question-word bonus the first "game" sentence ties and comes first.
    plain = texts("When was the game?", [GAME], second_ratio=1.01, type_weight=0.0)
    assert plain != ["The game was played on February 7, 2016, at Levi's Stadium."]


def test_the_better_ranked_passage_wins_a_tie() -> None:
    both = [OTHER, Hit(GAME.passage, 3.0)]
    assert texts("Levi's Stadium", both, second_ratio=1.01) == ["Levi's Stadium opened in 2014."]


def test_two_sentences_read_in_passage_order_within_the_word_budget() -> None:
    answer = texts("stadium people game played", [GAME], second_ratio=0.5)
    assert answer == [
        "The game was played on February 7, 2016, at Levi's Stadium.",
        "The stadium holds 68,500 people.",
    ]
    # A budget too small for both keeps the best one only.
    assert len(texts("stadium people game played", [GAME], second_ratio=0.5, max_words=12)) == 1


def test_only_the_first_passages_are_read() -> None:
    hits = [Hit(GAME.passage, 9.0), OTHER]
    assert all("opened" not in t for t in texts("opened 2014", hits, passages=1))
    assert texts("opened 2014", hits, passages=2, second_ratio=1.01) == [
        "Levi's Stadium opened in 2014."
    ]


def test_nothing_in_common_or_nothing_found_gives_nothing() -> None:
    assert texts("zebras", [GAME]) == []
    assert texts("the and of", [GAME]) == []
    assert texts("game", []) == []
