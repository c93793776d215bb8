"""REST chat and history, against the real server and database."""

from __future__ import annotations

import pytest

from server import keys
from server.app import create_app
from tests.accounts import signup
from tests.chat.ws import connect, recv_until


async def ask(client, user, message, **extra):
    return await client.post(
        "/api/v1/chat/chat", json={"message": message, **extra}, headers=user["headers"]
    )


async def test_chat_answers_from_the_knowledge_base_and_stores_both(client, user, db):
    resp = await ask(client, user, "How do I embed the widget on my site?")
    assert resp.status == 200
    body = await resp.json()
    assert body["response"]
    assert body["sources"] and set(body["sources"][0]) == {"id", "topic", "score"}
    rows = await db.fetch(
        "SELECT id, is_user_message, message, reply_to FROM chat_history WHERE user_id = $1"
        " ORDER BY id",
        user["id"],
    )
    assert [r["id"] for r in rows] == [body["message_id"], body["reply_id"]]
    assert rows[1]["message"] == body["response"] and rows[1]["reply_to"] == body["message_id"]


async def test_chat_with_nothing_found_says_so(client, user):
    body = await (await ask(client, user, "the of and to")).json()
    assert body["sources"] == []
    assert "information" in body["response"].lower()


async def test_chat_is_idempotent_with_an_id(client, user, db):
    first = await (await ask(client, user, "What is the purge?", id="rest-1")).json()
    second = await (await ask(client, user, "What is the purge?", id="rest-1")).json()
    assert first == second
    count = await db.fetchval("SELECT count(*) FROM chat_history WHERE user_id = $1", user["id"])
    assert count == 2
    conflict = await ask(client, user, "something else", id="rest-1")
    assert conflict.status == 409


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"message": ""},
        {"message": "x" * 4001},
        {"message": 12},
        {"message": "nul \x00 char"},
        {"message": "ok", "id": ""},
        {"message": "ok", "id": "x" * 65},
        {"message": "ok", "id": 5},
    ],
)
async def test_chat_bad_input_is_422(client, user, payload):
    resp = await client.post("/api/v1/chat/chat", json=payload, headers=user["headers"])
    assert resp.status == 422
    assert "detail" in await resp.json()


async def test_chat_takes_a_null_id_as_none(client, user):
    """An optional field sent as null counts as absent (the contract's clarification)."""
    resp = await client.post(
        "/api/v1/chat/chat", json={"message": "hello", "id": None}, headers=user["headers"]
    )
    assert resp.status == 200, await resp.text()


async def test_history_takes_the_largest_bigint_as_before(client, user):
    resp = await client.get(
        f"/api/v1/chat/chat-history?before={2**63 - 1}", headers=user["headers"]
    )
    assert resp.status == 200
    assert await resp.json() == []


async def test_chat_needs_a_token(client):
    resp = await client.post("/api/v1/chat/chat", json={"message": "hi"})
    assert resp.status == 401


async def test_history_pages_oldest_first_and_is_private(client, user):
    for i in range(3):
        assert (await ask(client, user, f"question {i} about the widget")).status == 200
    _, other_token, _ = await signup(client)
    other = {"Authorization": f"Bearer {other_token}"}
    assert await (await client.get("/api/v1/chat/chat-history", headers=other)).json() == []

    items = await (await client.get("/api/v1/chat/chat-history", headers=user["headers"])).json()
    assert len(items) == 6
    assert [i["id"] for i in items] == sorted(i["id"] for i in items)
    assert items[0]["message"] == "question 0 about the widget" and items[0]["is_user_message"]
    assert items[0]["client_id"] and items[1]["reply_to"] == items[0]["id"]
    assert items[0]["timestamp"].endswith("Z")

    page = await (
        await client.get("/api/v1/chat/chat-history?limit=2", headers=user["headers"])
    ).json()
    assert page == items[-2:]
    older = await (
        await client.get(
            f"/api/v1/chat/chat-history?limit=2&before={page[0]['id']}", headers=user["headers"]
        )
    ).json()
    assert older == items[-4:-2]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=501", "limit=abc", "before=x", "before=0", f"before={2**63}"]
)
async def test_history_bad_query_is_422(client, user, query):
    resp = await client.get(f"/api/v1/chat/chat-history?{query}", headers=user["headers"])
    assert resp.status == 422
    assert "detail" in await resp.json()


async def test_delete_history_removes_only_the_callers(client, user):
    await ask(client, user, "widget")
    _, other_token, _ = await signup(client)
    other = {"Authorization": f"Bearer {other_token}"}
    await client.post("/api/v1/chat/chat", json={"message": "widget"}, headers=other)
    resp = await client.delete("/api/v1/chat/chat-history", headers=user["headers"])
    assert resp.status == 200 and await resp.json() == {"deleted": 2}
    assert (
        await (await client.get("/api/v1/chat/chat-history", headers=user["headers"])).json() == []
    )
    assert len(await (await client.get("/api/v1/chat/chat-history", headers=other)).json()) == 2


async def test_docs_are_served_offline(client):
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/api/v1/auth/signup",
        "/api/v1/auth/login",
        "/api/v1/chat/chat",
        "/api/v1/chat/chat-history",
        "/api/v1/auth/me",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for page, asset in (
        ("/docs", "/docs/swagger_ui_static/swagger-ui-bundle.js"),
        ("/redoc", "/redoc/redoc_ui_static/redoc.standalone.js"),
    ):
        html = await (await client.get(page)).text()
        assert asset in html and "https://" not in html
        assert (await client.get(asset)).status == 200


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_unknown_path_and_method_are_json(client):
    resp = await client.get("/nope")
    assert resp.status == 404 and "detail" in await resp.json()
    resp = await client.put("/api/v1/chat/chat")
    assert resp.status == 405 and "detail" in await resp.json()


async def test_a_reply_that_cannot_be_stored_answers_503_like_any_database_failure(
    aiohttp_client, make_settings, monkeypatch
):
    from server import keys
    from server.db import queries

    async def away(*args, **kwargs):
        raise ConnectionRefusedError("the database is away")

    # A token delay: the question is stored first, then its reply fails to be.
    client = await aiohttp_client(create_app(make_settings(llm_token_delay_ms=1.0)))
    _, token, _ = await signup(client)
    user = {"headers": {"Authorization": f"Bearer {token}"}}
    monkeypatch.setattr(client.app[keys.REPLIES].store, "add_reply", away)
    resp = await ask(client, user, "How do I embed the widget?", id="away-1")
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    replied = await resp.json()

    # The same answer as a request the database fails outright (the middleware's mapping).
    monkeypatch.setattr(queries, "users_by_ids", away)
    resp = await client.get("/api/v1/chat/chat-history", headers=user["headers"])
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert (
        await resp.json() == replied == {"detail": "the database is unavailable, try again shortly"}
    )


async def test_with_an_llm_that_answers_at_once_question_and_reply_take_one_commit(
    aiohttp_client, make_settings, db
):
    """The mock without a token delay answers before anything is stored: the question
    and its reply go into one group commit; with a delay, two in a row."""
    for delay_ms, commits in ((0.0, 1), (1.0, 2)):
        client = await aiohttp_client(create_app(make_settings(llm_token_delay_ms=delay_ms)))
        _, token, user_id = await signup(client)
        user = {"headers": {"Authorization": f"Bearer {token}"}}
        store = client.app[keys.REPLIES].store
        before = store.batches
        body = await (await ask(client, user, "What is the purge?")).json()
        assert store.batches - before == commits
        rows = await db.fetch(
            "SELECT id, reply_to, message, conversation_id FROM chat_history"
            " WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        assert [(r["id"], r["reply_to"]) for r in rows] == [
            (body["message_id"], None),
            (body["reply_id"], body["message_id"]),
        ]
        assert rows[1]["message"] == body["response"]
        assert rows[0]["conversation_id"] == rows[1]["conversation_id"] == body["conversation_id"]


async def test_the_users_tabs_see_a_rest_question_answered_at_once(client, user):
    tab = await connect(client, user["token"])
    body = await (await ask(client, user, "How do I embed the widget?", id="rest-tab")).json()
    frames = await recv_until(tab, "end", "rest-tab")
    assert [f["type"] for f in frames[:2]] == ["message", "start"]
    assert frames[0]["message_id"] == body["message_id"]
    assert frames[1]["sources"] == body["sources"]
    tokens = [f for f in frames if f["type"] == "token"]
    assert [f["seq"] for f in tokens] == list(range(len(tokens)))
    assert frames[-1]["text"] == "".join(f["text"] for f in tokens) == body["response"]
    assert frames[-1]["message_id"] == body["reply_id"]


async def test_a_question_over_the_rate_is_stored_with_no_reply(aiohttp_client, make_settings, db):
    client = await aiohttp_client(create_app(make_settings(chat_rate_per_minute=1)))
    _, token, user_id = await signup(client)
    user = {"headers": {"Authorization": f"Bearer {token}"}}
    assert (await ask(client, user, "What is the purge?", id="r1")).status == 200
    refused = await ask(client, user, "What is the purge?", id="r2")
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "detail" in await refused.json()
    assert await db.fetchval("SELECT count(*) FROM chat_history WHERE user_id = $1", user_id) == 2


async def test_a_question_answered_at_once_that_cannot_be_stored_is_a_503(
    client, user, db, monkeypatch
):
    async def away(*args, **kwargs):
        raise ConnectionRefusedError("the database is away")

    monkeypatch.setattr(client.app[keys.REPLIES].store, "add_exchange", away)
    resp = await ask(client, user, "How do I embed the widget?", id="away-2")
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert not await db.fetchval("SELECT count(*) FROM chat_history WHERE user_id = $1", user["id"])
