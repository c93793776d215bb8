"""The real provider gets the conversation's earlier turns: the newest within its bound,
oldest first, and nothing of another conversation. Checked on the request the local
OpenAI stand-in receives."""

from __future__ import annotations

from openai_standin import OpenAIStandIn

from server.answers.llm.openai import OpenAIChatLLM, earlier_messages
from server.app import create_app
from tests.accounts import signup

ANSWER = "Hello, world!"  # the stand-in's pieces, joined


def turns_of(body: dict) -> list[tuple[str, str]]:
    """(role, content) of the request's messages between the system prompt and the question."""
    messages = body["messages"]
    assert messages[0]["role"] == "system"
    return [(m["role"], m["content"]) for m in messages[1:-1]]


async def test_the_server_sends_the_conversations_earlier_turns(
    aiohttp_client, make_settings, standin: OpenAIStandIn
):
    client = await aiohttp_client(
        create_app(
            make_settings(openai_api_key="sk-test", openai_base_url=standin.url, openai_model="m")
        )
    )
    _, token, _ = await signup(client)
    headers = {"Authorization": f"Bearer {token}"}

    async def ask(text: str, conversation_id: int | None = None) -> dict:
        body = {"message": text}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        resp = await client.post("/api/v1/chat/chat", json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    first = await ask("What is the refund policy?")
    assert turns_of(standin.requests[-1].body) == []  # nothing earlier
    conv = first["conversation_id"]
    await ask("And for yearly plans?", conv)
    resp = await client.post("/api/v1/chat/conversations", json={}, headers=headers)
    other = (await resp.json())["id"]
    await ask("Unrelated: how do I embed the widget?", other)
    assert turns_of(standin.requests[-1].body) == []  # a new conversation starts afresh
    await ask("How long does a refund take?", conv)
    body = standin.requests[-1].body
    assert turns_of(body) == [
        ("user", "What is the refund policy?"),
        ("assistant", ANSWER),
        ("user", "And for yearly plans?"),
        ("assistant", ANSWER),
    ]
    assert body["messages"][-1] == {"role": "user", "content": "How long does a refund take?"}


async def test_the_bound_keeps_the_newest_turns_oldest_first(http_session, standin: OpenAIStandIn):
    llm = OpenAIChatLLM(http_session, "sk", standin.url, history_turns=3, history_chars=1000)
    earlier = [(n % 2 == 0, f"turn {n}") for n in range(8)]
    pieces = [p async for p in llm.stream("now?", [], earlier=earlier)]
    assert "".join(pieces) == ANSWER
    assert turns_of(standin.requests[-1].body) == [
        ("assistant", "turn 5"),
        ("user", "turn 6"),
        ("assistant", "turn 7"),
    ]


def test_the_character_bound_drops_older_turns_whole():
    earlier = [(True, "a" * 50), (False, "b" * 30), (True, "c" * 30)]
    assert earlier_messages(earlier, 10, 60) == [
        {"role": "assistant", "content": "b" * 30},
        {"role": "user", "content": "c" * 30},
    ]
    # A turn that does not fit ends the list: nothing older is sent past it.
    assert earlier_messages(earlier, 10, 59) == [{"role": "user", "content": "c" * 30}]
    assert earlier_messages(earlier, 10, 29) == []
    assert earlier_messages(earlier, 0, 1000) == []
    assert earlier_messages([], 10, 1000) == []
