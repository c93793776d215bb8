"""The operators' endpoints: figures, unanswered questions, feedback, retrieval, audit log.

The test database is shared by the session, so figures are compared before and after.
"""

from __future__ import annotations

import json
import uuid

import pytest

from server.app import create_app
from tests.accounts import signup, unique_email
from tests.answers.test_admin import SEED, verified_headers


@pytest.fixture
def admin_email() -> str:
    return unique_email("admin")


@pytest.fixture
async def kb_client(aiohttp_client, make_settings, tmp_path, admin_email):
    """The app on a small knowledge base of its own, with one admin address."""
    path = tmp_path / "kb.json"
    path.write_text(json.dumps(SEED))
    settings = make_settings(knowledge_path=path, admin_emails=frozenset({admin_email}))
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def admin(kb_client, db, admin_email) -> dict[str, str]:
    return await verified_headers(kb_client, db, admin_email)


ENDPOINTS = [
    ("GET", "/api/v1/admin/stats"),
    ("GET", "/api/v1/admin/unanswered"),
    ("GET", "/api/v1/admin/feedback"),
    ("POST", "/api/v1/admin/retrieve"),
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/api/v1/admin/conversations"),
    ("GET", "/api/v1/admin/conversations/1"),
]


async def chat(client, headers, message: str) -> dict:
    resp = await client.post("/api/v1/chat/chat", json={"message": message}, headers=headers)
    assert resp.status == 200
    return await resp.json()


async def get(client, headers, path: str):
    resp = await client.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_only_admins_see_anything(kb_client, admin, method, path):
    assert (await kb_client.request(method, path)).status == 401
    _, token, _ = await signup(kb_client)  # a user, not on ADMIN_EMAILS
    resp = await kb_client.request(
        method, path, json={"question": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 403
    assert "detail" in await resp.json()


async def test_stats_count_the_last_day(kb_client, admin):
    before = await get(kb_client, admin, "/api/v1/admin/stats")
    _, token, _ = await signup(kb_client)
    user = {"Authorization": f"Bearer {token}"}
    answered = await chat(kb_client, user, "How do I care for a teapot?")
    await chat(kb_client, user, f"zyxwvut {uuid.uuid4().hex}")  # nothing matches
    await kb_client.put(
        f"/api/v1/chat/feedback/{answered['reply_id']}", json={"rating": "down"}, headers=user
    )
    ws = await kb_client.ws_connect("/api/v1/chat/ws", headers=user)
    await ws.receive_json()  # ready
    after = await get(kb_client, admin, "/api/v1/admin/stats")
    await ws.close()
    assert after["users"] == before["users"] + 1
    assert after["guests"] == before["guests"]
    assert after["messages_24h"] == before["messages_24h"] + 2
    assert after["unanswered_24h"] == before["unanswered_24h"] + 1
    assert after["feedback_24h"]["down"] == before["feedback_24h"]["down"] + 1
    assert after["feedback_24h"]["up"] == before["feedback_24h"]["up"]
    assert after["connections"] == 1
    first = after["first_token_ms"]
    assert first is not None and 0 <= first["p50"] <= first["p99"]


async def test_unanswered_questions_are_grouped_by_text(kb_client, admin):
    _, token, _ = await signup(kb_client)
    user = {"Authorization": f"Bearer {token}"}
    word = uuid.uuid4().hex
    for text in (f"qwertyuiop {word}", f"  QWERTYUIOP   {word} ", f"qwertyuiop {word}"):
        assert (await chat(kb_client, user, text))["sources"] == []
    found = await get(kb_client, admin, "/api/v1/admin/unanswered?days=1&limit=100")
    mine = [item for item in found if word in item["question"]]
    assert len(mine) == 1
    assert mine[0]["count"] == 3
    assert mine[0]["question"] == f"qwertyuiop {word}"  # the newest wording
    assert set(mine[0]) == {"question", "count", "last_asked", "conversation_id"}
    history = await get(kb_client, user, "/api/v1/chat/chat-history")
    assert mine[0]["conversation_id"] == history[-1]["conversation_id"]
    counts = [item["count"] for item in found]
    assert counts == sorted(counts, reverse=True)


async def test_feedback_lists_ratings_newest_first_with_their_context(kb_client, admin):
    email, token, user_id = await signup(kb_client)
    user = {"Authorization": f"Bearer {token}"}
    replies = []
    for question in ("How do I care for a teapot?", "How do I descale the kettle?"):
        answer = await chat(kb_client, user, question)
        replies.append(answer["reply_id"])
        body = {"rating": "down", "comment": f"about {question}"}
        url = f"/api/v1/chat/feedback/{answer['reply_id']}"
        assert (await kb_client.put(url, json=body, headers=user)).status == 200
    found = await get(kb_client, admin, "/api/v1/admin/feedback?rating=down&limit=100")
    mine = [item for item in found if item["reply_id"] in replies]
    assert [item["reply_id"] for item in mine] == replies[::-1]
    newest = mine[0]
    assert newest["question"] == "How do I descale the kettle?"
    assert newest["comment"] == "about How do I descale the kettle?"
    assert newest["reply"] and newest["sources"]
    assert newest["user"] == {"id": user_id, "email": email, "is_guest": False}
    page = await get(kb_client, admin, f"/api/v1/admin/feedback?before={replies[1]}&limit=100")
    assert replies[1] not in [item["reply_id"] for item in page]
    assert replies[0] in [item["reply_id"] for item in page]
    ups = await get(kb_client, admin, "/api/v1/admin/feedback?rating=up&limit=100")
    assert not {item["reply_id"] for item in ups} & set(replies)


@pytest.mark.parametrize(
    "query", ["rating=meh", "limit=0", "limit=101", "before=x", "days=0", "days=abc"]
)
async def test_bad_queries_are_422(kb_client, admin, query):
    path = "/api/v1/admin/unanswered" if query.startswith("days") else "/api/v1/admin/feedback"
    resp = await kb_client.get(f"{path}?{query}", headers=admin)
    assert resp.status == 422
    assert "detail" in await resp.json()


async def test_retrieve_shows_the_passages_and_stores_nothing(kb_client, admin, db):
    count = await db.fetchval("SELECT count(*) FROM chat_history")
    resp = await kb_client.post(
        "/api/v1/admin/retrieve", json={"question": "teapot kettle water"}, headers=admin
    )
    assert resp.status == 200
    passages = (await resp.json())["passages"]
    assert passages, passages
    assert set(passages[0]) == {"id", "topic", "score", "content"}
    scores = [p["score"] for p in passages]
    assert scores == sorted(scores, reverse=True)
    assert await db.fetchval("SELECT count(*) FROM chat_history") == count
    for body in ({}, {"question": ""}, {"question": 5}, {"question": "x" * 4001}):
        resp = await kb_client.post("/api/v1/admin/retrieve", json=body, headers=admin)
        assert resp.status == 422


async def test_the_audit_log_records_edits_and_purges(kb_client, admin, admin_email):
    doc = {"id": f"audit-{uuid.uuid4().hex[:8]}", "topic": "Audit", "content": "Logged."}
    assert (await kb_client.post("/api/v1/admin/documents", json=doc, headers=admin)).status == 201
    url = f"/api/v1/admin/documents/{doc['id']}"
    assert (await kb_client.delete(url, headers=admin)).status == 200
    assert (await kb_client.post("/api/v1/admin/purge", headers=admin)).status == 200
    entries = await get(kb_client, admin, "/api/v1/admin/audit?limit=3")
    assert [(e["admin"], e["action"]) for e in entries] == [
        (admin_email, "purge run"),
        (admin_email, "document deleted"),
        (admin_email, "document added"),
    ]
    assert entries[1]["target"] == doc["id"]


async def test_conversations_are_listed_searched_and_read(kb_client, admin, admin_email):
    email, token, user_id = await signup(kb_client)
    user = {"Authorization": f"Bearer {token}"}
    word = uuid.uuid4().hex
    first = await chat(kb_client, user, f"How do I care for a teapot? {word}")
    resp = await kb_client.post("/api/v1/chat/conversations", json={}, headers=user)
    second_id = (await resp.json())["id"]
    body = {"message": "How do I descale the kettle?", "conversation_id": second_id}
    second = await (await kb_client.post("/api/v1/chat/chat", json=body, headers=user)).json()
    await kb_client.put(
        f"/api/v1/chat/feedback/{second['reply_id']}", json={"rating": "down"}, headers=user
    )

    mine = await get(kb_client, admin, f"/api/v1/admin/conversations?user={email.upper()}")
    assert [c["id"] for c in mine] == [second_id, first["conversation_id"]]
    assert mine[0]["user"] == {"id": user_id, "email": email, "is_guest": False}
    assert (mine[0]["messages"], mine[0]["down_votes"]) == (2, 1)
    assert (mine[1]["messages"], mine[1]["down_votes"]) == (2, 0)
    page = await get(
        kb_client, admin, f"/api/v1/admin/conversations?user={email}&before={second_id}"
    )
    assert [c["id"] for c in page] == [first["conversation_id"]]
    found = await get(kb_client, admin, f"/api/v1/admin/conversations?q={word.upper()}")
    assert [c["id"] for c in found] == [first["conversation_id"]]

    read = await get(kb_client, admin, f"/api/v1/admin/conversations/{second_id}")
    assert read["id"] == second_id and read["user"]["email"] == email
    question, reply = read["messages"]
    assert question["message"] == "How do I descale the kettle?"
    assert reply["sources"] and reply["feedback"] == "down"
    entries = await get(kb_client, admin, "/api/v1/admin/audit?limit=1")
    assert entries == [
        {
            "at": entries[0]["at"],
            "admin": admin_email,
            "action": "conversation read",
            "target": str(second_id),
        }
    ]
    missing = await kb_client.get("/api/v1/admin/conversations/999999999", headers=admin)
    assert missing.status == 404
    for bad_user in ("not-an-email", ""):
        path = f"/api/v1/admin/conversations?user={bad_user}"
        assert (await kb_client.get(path, headers=admin)).status == 422


async def test_guests_are_counted_apart_and_marked(aiohttp_client, make_settings, db):
    admin_email = unique_email("admin")
    settings = make_settings(admin_emails=frozenset({admin_email}), allow_guests=True)
    client = await aiohttp_client(create_app(settings))
    admin = await verified_headers(client, db, admin_email)
    before = await get(client, admin, "/api/v1/admin/stats")
    resp = await client.post("/api/v1/auth/guest")
    assert resp.status == 201
    guest = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
    answer = await chat(client, guest, "How do I embed the widget?")
    url = f"/api/v1/chat/feedback/{answer['reply_id']}"
    assert (await client.put(url, json={"rating": "up"}, headers=guest)).status == 200
    after = await get(client, admin, "/api/v1/admin/stats")
    assert (after["guests"], after["users"]) == (before["guests"] + 1, before["users"])
    listed = await get(client, admin, "/api/v1/admin/feedback?rating=up&limit=100")
    item = next(i for i in listed if i["reply_id"] == answer["reply_id"])
    assert item["user"]["is_guest"] is True and item["user"]["email"] is None
    convs = await get(client, admin, "/api/v1/admin/conversations?limit=100")
    conv = next(c for c in convs if c["id"] == answer["conversation_id"])
    assert conv["user"]["is_guest"] is True
