"""What the chat relies on of any transport, checked on both (LISTEN/NOTIFY and Redis):
events reach the other instances in order and never come back to their sender, batches
merge a reply's tokens, and `peers` lists who else listens."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import replace

from protocol import ErrorCode, FinishReason
from server.fanout.events import Cancel, Ended, Failed, Hello, MessageStored, Started, Tokens
from tests.fanout.deliveries import events_from, eventually, eventually_async

TS = "2026-12-04T23:00:00.000000Z"


async def test_events_reach_the_others_in_order_and_never_their_sender(open_backend):
    async with AsyncExitStack() as stack:
        a, got_a = await stack.enter_async_context(open_backend())
        _b, got_b = await stack.enter_async_context(open_backend())
        c, got_c = await stack.enter_async_context(open_backend())
        sent = [
            MessageStored(7, "m1", 11, TS, "Hello " + "é" * 4000),
            Started(7, "m1", 11, ({"id": "doc#2", "topic": "Docs", "score": 1.5},)),
            *[Tokens(7, "m1", seq, (f"t{seq} ",)) for seq in range(50)],
            Failed(7, "m1", ErrorCode.UPSTREAM_ERROR, "the LLM failed"),
            Ended(7, "m1", 12, FinishReason.ERROR),
            Cancel(7, "m2"),
        ]
        for event in sent:
            a.publish(event)
        for got in (got_b, got_c):
            await eventually(
                lambda got=got: any(isinstance(e, Cancel) for e in events_from(got, a.instance))
            )
            received = [e for e in events_from(got, a.instance) if not isinstance(e, Hello)]
            tokens = [t for e in received if isinstance(e, Tokens) for t in e.tokens]
            assert tokens == [f"t{seq} " for seq in range(50)]
            seqs = [e.seq for e in received if isinstance(e, Tokens)]
            assert seqs == sorted(seqs) and seqs[0] == 0
            others = [e for e in received if not isinstance(e, Tokens)]
            expected = [e for e in sent if not isinstance(e, Tokens)]
            # A text too long for one NOTIFY travels as None (the row has it); Redis carries it.
            assert others[0] in (expected[0], replace(expected[0], text=None))
            assert others[1:] == expected[1:]
        assert a.sent > 0
        await asyncio.sleep(0.3)
        assert events_from(got_a, a.instance) == []
        # Whoever listens already hears a newcomer's hello.
        assert Hello() in events_from(got_a, c.instance)
        assert Hello() in events_from(got_b, c.instance)


async def test_consecutive_tokens_travel_as_one_event(open_backend):
    async with open_backend() as (a, _), open_backend() as (_b, got_b):
        for seq in range(200):
            a.publish(Tokens(3, "r", seq, ("x",)))
        await eventually(
            lambda: (
                sum(len(e.tokens) for e in events_from(got_b, a.instance) if isinstance(e, Tokens))
                == 200
            )
        )
        assert len([e for e in events_from(got_b, a.instance) if isinstance(e, Tokens)]) < 200


async def test_peers_lists_the_other_listening_instances(open_backend):
    async with open_backend() as (a, _):
        async with open_backend() as (b, _):
            assert b.instance in await a.peers()
            assert a.instance in await b.peers() and b.instance not in await b.peers()
        await eventually_async(lambda: a.peers(), lambda peers: b.instance not in peers)
