"""Feedback on replies: PUT/DELETE /api/v1/chat/feedback/{reply_id}, and its place in history."""

from __future__ import annotations

import pytest

from server import keys
from tests.accounts import signup
from tests.jobs.history_rows import DAY, OLD, add_row


async def ask(client, user, message="How do I embed the widget on my site?"):
    resp = await client.post(
        "/api/v1/chat/chat", json={"message": message}, headers=user["headers"]
    )
    assert resp.status == 200
    return await resp.json()


def feedback_url(reply_id) -> str:
    return f"/api/v1/chat/feedback/{reply_id}"


async def reply_items(client, user):
    resp = await client.get("/api/v1/chat/chat-history", headers=user["headers"])
    return [item for item in await resp.json() if not item["is_user_message"]]


async def test_rate_a_reply_replace_it_and_take_it_back(client, user):
    answer = await ask(client, user)
    url = feedback_url(answer["reply_id"])
    assert [i["feedback"] for i in await reply_items(client, user)] == [None]

    resp = await client.put(
        url, json={"rating": "down", "comment": "too long"}, headers=user["headers"]
    )
    assert resp.status == 200
    assert await resp.json() == {
        "reply_id": answer["reply_id"],
        "rating": "down",
        "comment": "too long",
    }
    assert [i["feedback"] for i in await reply_items(client, user)] == ["down"]

    resp = await client.put(url, json={"rating": "up", "comment": None}, headers=user["headers"])
    assert await resp.json() == {"reply_id": answer["reply_id"], "rating": "up", "comment": None}
    assert [i["feedback"] for i in await reply_items(client, user)] == ["up"]

    resp = await client.delete(url, headers=user["headers"])
    assert resp.status == 200
    assert (await resp.json())["rating"] is None
    assert [i["feedback"] for i in await reply_items(client, user)] == [None]
    # Taking back what is not there is no error: the rating is gone either way.
    assert (await client.delete(url, headers=user["headers"])).status == 200


async def test_only_the_callers_own_replies_can_be_rated(client, user):
    answer = await ask(client, user)
    _, other_token, _ = await signup(client)
    other = {"Authorization": f"Bearer {other_token}"}
    for reply_id in (answer["reply_id"], answer["message_id"], 2**62, 2**64):
        url = feedback_url(reply_id)
        resp = await client.put(url, json={"rating": "up"}, headers=other)
        assert resp.status == 404, reply_id
        assert "detail" in await resp.json()
        assert (await client.delete(url, headers=other)).status == 404
    # Its own question is no reply either.
    url = feedback_url(answer["message_id"])
    assert (await client.put(url, json={"rating": "up"}, headers=user["headers"])).status == 404
    assert [i["feedback"] for i in await reply_items(client, user)] == [None]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"rating": "meh"}, 422),
        ({"rating": 1}, 422),
        ({"rating": None}, 422),
        ({"rating": "up", "comment": "x" * 1001}, 422),
        ({"rating": "up", "comment": 5}, 422),
        ({"rating": "up", "comment": "nul \x00"}, 422),
        ([], 422),
        ("{broken", 400),
    ],
)
async def test_bad_feedback_is_refused_and_stores_nothing(client, user, body, status):
    answer = await ask(client, user)
    url = feedback_url(answer["reply_id"])
    if isinstance(body, str):
        resp = await client.put(
            url, data=body, headers={**user["headers"], "Content-Type": "application/json"}
        )
    else:
        resp = await client.put(url, json=body, headers=user["headers"])
    assert resp.status == status
    assert "detail" in await resp.json()
    assert [i["feedback"] for i in await reply_items(client, user)] == [None]


async def test_feedback_needs_a_token_and_a_numeric_id(client, user):
    assert (await client.put(feedback_url(1), json={"rating": "up"})).status == 401
    resp = await client.put(feedback_url("abc"), json={"rating": "up"}, headers=user["headers"])
    assert resp.status == 404
    assert "detail" in await resp.json()


async def test_deleting_history_deletes_its_feedback(client, user, db):
    answer = await ask(client, user)
    url = feedback_url(answer["reply_id"])
    await client.put(url, json={"rating": "down"}, headers=user["headers"])
    resp = await client.delete("/api/v1/chat/chat-history", headers=user["headers"])
    assert (await resp.json())["deleted"] == 2
    assert await db.fetchval("SELECT count(*) FROM feedback WHERE user_id = $1", user["id"]) == 0


async def test_the_purge_takes_the_feedback_of_purged_replies(client, db):
    _, _, user_id = await signup(client)
    message = await add_row(db, user_id, OLD)
    old_reply = await add_row(db, user_id, OLD, reply_to=message)
    new_message = await add_row(db, user_id, DAY)
    new_reply = await add_row(db, user_id, DAY, reply_to=new_message)
    for reply_id in (old_reply, new_reply):
        await db.execute(
            "INSERT INTO feedback (reply_id, user_id, rating) VALUES ($1, $2, 'up')",
            reply_id,
            user_id,
        )
    result = await client.app[keys.PURGE].run_once()
    assert result.status == "ok"
    left = await db.fetch("SELECT reply_id FROM feedback WHERE user_id = $1", user_id)
    assert [r["reply_id"] for r in left] == [new_reply]
