"""How the load generator spreads connections over client processes and source addresses."""

from __future__ import annotations

import pytest

from bench.loadgen import ONE_ADDRESS_MAX, PER_ADDRESS, PER_PROCESS, plan


def test_few_connections_keep_the_processes_asked_for_and_any_address() -> None:
    assert plan(1100, 1) == (1, [()])
    assert plan(6, 2) == (2, [(), ()])
    assert plan(1, 4) == (1, [()])


def test_more_connections_than_a_process_holds_get_more_processes() -> None:
    processes, sources = plan(PER_PROCESS * 3 + 1, 1)
    assert processes == 4
    assert len(sources) == 4


def test_many_connections_get_addresses_of_their_own_a_process_each_lightly_used() -> None:
    connections = 100_100
    processes, sources = plan(connections, 1)
    assert len(sources) == processes >= connections / PER_PROCESS
    every = [a for mine in sources for a in mine]
    assert len(every) == len(set(every)) >= connections / PER_ADDRESS
    assert all(a.startswith("127.0.0.") and a != "127.0.0.1" for a in every)
    assert all(sources)


def test_addresses_asked_for_are_dealt_in_turn_and_shared_when_fewer() -> None:
    assert plan(100, 4, source_addresses=2)[1] == [("127.0.0.2",), ("127.0.0.3",)] * 2
    assert plan(100, 2, source_addresses=3)[1] == [("127.0.0.2", "127.0.0.4"), ("127.0.0.3",)]


def test_too_few_addresses_for_the_connections_is_refused() -> None:
    with pytest.raises(ValueError):
        plan(ONE_ADDRESS_MAX * 3, 8, source_addresses=1)
    with pytest.raises(ValueError):
        plan(ONE_ADDRESS_MAX + 1, 8, source_addresses=0)
