"""The purge benchmark's windows: equal lengths around the purge, never overlapping."""

from __future__ import annotations

from bench.purge_bench import WINDOWS, ratio, windows


def test_a_short_purge_gets_a_window_as_long_as_the_others():
    spans = windows(100.0, 100.4, 3.0)
    assert list(spans) == list(WINDOWS)
    assert spans == {
        "before 1": (94.0, 97.0),
        "before 2": (97.0, 100.0),
        "purge": (100.0, 103.0),
        "after": (103.0, 106.0),
    }


def test_a_long_purge_gets_a_window_as_long_as_itself_and_the_after_window_follows():
    spans = windows(100.0, 107.5, 3.0)
    assert spans["purge"] == (100.0, 107.5)
    assert spans["after"] == (107.5, 110.5)
    assert spans["before 2"] == (97.0, 100.0)


def test_ratios_are_taken_figure_by_figure():
    a = {"p50": 2.0, "p99": 9.0, "max": 30.0, "req_s": 150.0, "requests": 1.0}
    b = {"p50": 4.0, "p99": 6.0, "max": 10.0, "req_s": 300.0, "requests": 7.0}
    assert ratio(a, b) == {"p50": 0.5, "p99": 1.5, "max": 3.0, "req_s": 0.5}
