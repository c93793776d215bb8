"""A reply's states and every rule that moves it from one to the next (h11's `_state.py`).

A reply lives on the instance that generates it (a *local* reply) and, as a
*mirror*, on every other instance whose connections follow it. Both are a
`server.chat.replies.Reply` and move through the same states:

    WAITING ──begin──▶ STREAMING ──store──▶ STORING ──finish──▶ ENDED
       │                   │                                      ▲
       └──────finish───────┴───────────────finish─────────────────┘  (mirrors only)

- WAITING: the message is stored; a local reply waits for the reply before it
  on the same connection (replies start in the order their messages were
  sent), a mirror for its `start` event.
- STREAMING: `start` was sent; tokens flow (`token` keeps the state).
- STORING: generation is over and the reply's row is being written. A cancel
  no longer interrupts: what was generated is stored as it is.
- ENDED: `end` was sent; the reply changes no more.

A local reply always passes through STORING: its `end` goes out only once its
row is committed (or could not be). A mirror ends when its instance says so,
which may skip STREAMING (it began before this instance listened) or STORING
(the other instance stores it); a mirror whose instance is gone is stored here
and so takes STORING too. `fail` (an `error` frame before the `end`) may come
in any state but ENDED and keeps it.

Anything else is a bug, and raises `ReplyStateError`.
"""

from __future__ import annotations

import enum


class ReplyState(enum.Enum):
    WAITING = "waiting"
    STREAMING = "streaming"
    STORING = "storing"
    ENDED = "ended"


class Step(enum.Enum):
    BEGIN = "begin"
    TOKEN = "token"
    FAIL = "fail"
    STORE = "store"
    FINISH = "finish"


class ReplyStateError(RuntimeError):
    """A step the reply's state does not allow."""


_W, _S, _T, _E = ReplyState.WAITING, ReplyState.STREAMING, ReplyState.STORING, ReplyState.ENDED

TRANSITIONS: dict[ReplyState, dict[Step, ReplyState]] = {
    _W: {Step.BEGIN: _S, Step.FAIL: _W, Step.FINISH: _E},
    _S: {Step.TOKEN: _S, Step.FAIL: _S, Step.STORE: _T, Step.FINISH: _E},
    _T: {Step.FAIL: _T, Step.FINISH: _E},
    _E: {},
}

#: The states in which a cancel stops generation at once.
INTERRUPTIBLE = frozenset({_W, _S})


def next_state(state: ReplyState, step: Step) -> ReplyState:
    """The state after `step`; raises ReplyStateError when `state` does not allow it."""
    try:
        return TRANSITIONS[state][step]
    except KeyError:
        raise ReplyStateError(f"a reply cannot {step.value} while {state.value}") from None
