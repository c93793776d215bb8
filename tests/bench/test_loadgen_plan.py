"""How the load generator spreads connections over client processes and source addresses."""

from __future__ import annotations

import pytest

from bench.loadgen import ONE_ADDRESS_MAX, PER_PROCESS, plan


def test_few_connections_keep_the_processes_asked_for_and_any_address() -> None:
    assert plan(1100, 1) == (1, [None])
    assert plan(6, 2) == (2, [None, None])
    assert plan(1, 4) == (1, [None])


def test_more_connections_than_a_process_holds_get_more_processes() -> None:
    processes, sources = plan(PER_PROCESS * 3 + 1, 1)
    assert processes == 4
    assert len(sources) == 4


def test_more_than_one_address_holds_gets_an_address_a_process() -> None:
    connections = max(ONE_ADDRESS_MAX, PER_PROCESS) * 4
    processes, sources = plan(connections, 1)
    assert len(set(sources)) == processes >= 4
    assert all(s is not None and s.startswith("127.0.0.") and s != "127.0.0.1" for s in sources)


def test_addresses_asked_for_are_shared_round_robin() -> None:
    assert plan(100, 4, source_addresses=2)[1] == ["127.0.0.2", "127.0.0.3"] * 2


def test_too_few_addresses_for_the_connections_is_refused() -> None:
    with pytest.raises(ValueError):
        plan(ONE_ADDRESS_MAX * 3, 8, source_addresses=1)
    with pytest.raises(ValueError):
        plan(ONE_ADDRESS_MAX + 1, 8, source_addresses=0)
