"""The reply's state machine: the allowed paths, and nothing else."""

import pytest

from server.chat.reply_state import (
    INTERRUPTIBLE,
    TRANSITIONS,
    ReplyState,
    ReplyStateError,
    Step,
    next_state,
)

W, S, T, E = ReplyState.WAITING, ReplyState.STREAMING, ReplyState.STORING, ReplyState.ENDED


def walk(*steps: Step) -> ReplyState:
    state = W
    for step in steps:
        state = next_state(state, step)
    return state


def test_a_local_reply_streams_then_stores_then_ends():
    assert walk(Step.BEGIN, Step.TOKEN, Step.TOKEN, Step.STORE, Step.FINISH) is E


def test_a_failed_reply_keeps_its_state_until_it_ends():
    assert walk(Step.BEGIN, Step.FAIL) is S
    assert walk(Step.BEGIN, Step.STORE, Step.FAIL, Step.FINISH) is E
    assert walk(Step.FAIL) is W


def test_a_mirror_may_end_without_start_or_storing():
    assert walk(Step.FINISH) is E
    assert walk(Step.BEGIN, Step.TOKEN, Step.FINISH) is E


@pytest.mark.parametrize(
    "state, step",
    [
        (W, Step.TOKEN),  # no token before start
        (W, Step.STORE),  # a reply is stored only once it began
        (S, Step.BEGIN),  # one start
        (T, Step.TOKEN),  # nothing is generated while storing
        (T, Step.BEGIN),
        (T, Step.STORE),
        *((E, step) for step in Step),  # an ended reply changes no more
    ],
)
def test_every_other_step_is_refused(state, step):
    with pytest.raises(ReplyStateError):
        next_state(state, step)


def test_the_table_covers_every_state_and_only_interrupts_before_storing():
    assert set(TRANSITIONS) == set(ReplyState)
    assert {W, S} == INTERRUPTIBLE
