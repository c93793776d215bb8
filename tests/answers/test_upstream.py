"""Provider failures through the whole server: the real WebSocket channel and REST chat,
with the OpenAI-compatible provider pointed at the local stand-in.

Every failure must end the reply promptly: `error` (`upstream_error`) then `end`
with `finish_reason` `error` and the text so far, stored; REST answers 502. The
connection stays usable and the next question works once the provider recovers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from openai_standin import OpenAIStandIn

from server.app import create_app
from tests.accounts import signup
from tests.chat.ws import connect, recv_until

QUESTION = "How do I embed the widget?"
ANSWER = "Hello, world!"  # the stand-in's pieces, joined
TIMEOUT_S = 0.5  # LLM_TIMEOUT_S; the first piece may take twice that

FAILURES = [
    pytest.param(
        {"mode": "status", "status": 401, "error_message": "Incorrect API key provided"},
        "refused the API key (401): Incorrect API key provided",
        "",
        id="401",
    ),
    pytest.param(
        {"mode": "status", "status": 429, "retry_after": "7", "error_message": "Slow down"},
        "rate limiting requests (429); retry in 7 s: Slow down",
        "",
        id="429",
    ),
    pytest.param(
        {"mode": "status", "status": 500, "error_message": "boom"},
        "failed (500 Internal Server Error): boom",
        "",
        id="500",
    ),
    pytest.param(
        {"mode": "cut"}, "closed the stream before the answer was complete", "Hello, ", id="cut"
    ),
    pytest.param({"mode": "malformed"}, "sent a malformed event", "Hello", id="malformed"),
    pytest.param({"mode": "hang"}, f"did not answer within {2 * TIMEOUT_S:g} s", "", id="hang"),
    pytest.param(
        {"mode": "stall"}, f"stopped answering (no data for {TIMEOUT_S:g} s)", "Hello", id="stall"
    ),
]


@pytest.fixture
async def up_settings(make_settings, standin: OpenAIStandIn):
    return make_settings(
        openai_api_key="sk-test",
        openai_base_url=standin.url,
        openai_model="standin-model",
        llm_timeout_s=TIMEOUT_S,
    )


@pytest.fixture
async def up_client(aiohttp_client, up_settings):
    return await aiohttp_client(create_app(up_settings))


def misbehave(standin: OpenAIStandIn, knobs: dict[str, Any]) -> None:
    for name, value in knobs.items():
        setattr(standin, name, value)


def recover(standin: OpenAIStandIn) -> None:
    standin.mode = "stream"
    standin.status = 200
    standin.retry_after = None


@pytest.mark.parametrize(("knobs", "reason", "text"), FAILURES)
async def test_websocket_reply_ends_with_upstream_error_then_recovers(
    up_client, standin, db, knobs, reason, text
):
    _, token, user_id = await signup(up_client)
    ws = await connect(up_client, token)
    misbehave(standin, knobs)

    began = time.monotonic()
    await ws.send_json({"type": "message", "id": "m1", "text": QUESTION})
    frames = await recv_until(ws, "end", "m1", timeout=5)
    assert time.monotonic() - began < 4 * TIMEOUT_S + 1

    kinds = [f["type"] for f in frames]
    tokens = [f for f in frames if f["type"] == "token"]
    assert kinds == ["ack", "start", *["token"] * len(tokens), "error", "end"]
    assert frames[1]["sources"], "the question matches the knowledge base"
    error, end = frames[-2], frames[-1]
    assert error["id"] == "m1" and error["code"] == "upstream_error"
    assert reason in error["message"]
    assert end["finish_reason"] == "error"
    assert end["text"] == "".join(t["text"] for t in tokens) == text
    row = await db.fetchrow(
        "SELECT message, finish_reason, reply_to, user_id FROM chat_history WHERE id = $1",
        end["message_id"],
    )
    assert row["finish_reason"] == "error" and row["message"] == text
    assert row["reply_to"] == frames[0]["message_id"] and row["user_id"] == user_id

    # The provider recovers: the same connection asks again and gets the answer.
    recover(standin)
    await ws.send_json({"type": "message", "id": "m2", "text": QUESTION})
    frames = await recv_until(ws, "end", "m2", timeout=5)
    assert [f["type"] for f in frames if f["type"] == "error"] == []
    assert frames[-1]["finish_reason"] == "stop" and frames[-1]["text"] == ANSWER
    assert not ws.closed
    await ws.close()


@pytest.mark.parametrize(("knobs", "reason", "text"), FAILURES)
async def test_rest_chat_answers_502_then_recovers(up_client, standin, db, knobs, reason, text):
    _, token, user_id = await signup(up_client)
    headers = {"Authorization": f"Bearer {token}"}
    misbehave(standin, knobs)

    began = time.monotonic()
    resp = await up_client.post(
        "/api/v1/chat/chat", json={"message": QUESTION, "id": "r1"}, headers=headers
    )
    assert time.monotonic() - began < 4 * TIMEOUT_S + 1
    assert resp.status == 502
    body = await resp.json()
    assert set(body) == {"detail"} and "language model" in body["detail"]
    rows = await db.fetch(
        "SELECT message, is_user_message, finish_reason FROM chat_history"
        " WHERE user_id = $1 ORDER BY id",
        user_id,
    )
    assert [(r["is_user_message"], r["message"], r["finish_reason"]) for r in rows] == [
        (True, QUESTION, None),
        (False, text, "error"),
    ]

    recover(standin)
    resp = await up_client.post("/api/v1/chat/chat", json={"message": QUESTION}, headers=headers)
    assert resp.status == 200
    body = await resp.json()
    assert body["response"] == ANSWER and body["sources"]


async def test_the_provider_gets_the_question_with_the_retrieved_passages(
    up_client, standin, up_settings
):
    _, token, _ = await signup(up_client)
    resp = await up_client.post(
        "/api/v1/chat/chat",
        json={"message": QUESTION},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200
    body = await resp.json()
    request = standin.requests[-1]
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.body["model"] == "standin-model" and request.body["stream"] is True
    system, user = request.body["messages"]
    assert user == {"role": "user", "content": QUESTION}
    for source in body["sources"]:
        assert f"(id {source['id']})" in system["content"]
