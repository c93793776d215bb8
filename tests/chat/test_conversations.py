"""Conversations over REST and the WebSocket, against the real server and database."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.accounts import signup
from tests.chat.ws import connect, recv, recv_until

API = "/api/v1/chat/conversations"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_user(client):
    _, token, user_id = await signup(client)
    return token, user_id


async def create(client, token, **body):
    resp = await client.post(API, json=body, headers=auth(token))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def listing(client, token, query: str = ""):
    resp = await client.get(API + query, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def chat(client, token, message: str, **extra):
    resp = await client.post(
        "/api/v1/chat/chat", json={"message": message, **extra}, headers=auth(token)
    )
    return resp.status, await resp.json()


async def history(client, token, query: str = ""):
    resp = await client.get("/api/v1/chat/chat-history" + query, headers=auth(token))
    return resp.status, await resp.json()


def frame(**fields) -> str:
    return orjson.dumps(fields).decode()


# -- REST --------------------------------------------------------------------------------


async def test_create_list_rename_delete(client):
    token, _ = await new_user(client)
    assert await listing(client, token) == []
    made = await create(client, token, title="Billing")
    assert set(made) == {"id", "title", "created_at", "updated_at", "messages"}
    assert made["title"] == "Billing" and made["messages"] == 0
    untitled = await create(client, token)
    assert untitled["title"] is None
    assert [c["id"] for c in await listing(client, token)] == [untitled["id"], made["id"]]

    resp = await client.patch(f"{API}/{made['id']}", json={"title": "Refunds"}, headers=auth(token))
    assert resp.status == 200
    renamed = await resp.json()
    assert renamed["title"] == "Refunds" and renamed["updated_at"] == made["updated_at"]
    # A rename does not count as activity: the order stays.
    assert [c["id"] for c in await listing(client, token)] == [untitled["id"], made["id"]]

    status, body = await chat(client, token, "How do refunds work?", conversation_id=made["id"])
    assert status == 200 and body["conversation_id"] == made["id"]
    listed = await listing(client, token)
    assert [c["id"] for c in listed] == [made["id"], untitled["id"]]
    assert listed[0]["messages"] == 2 and listed[0]["updated_at"] > made["updated_at"]

    resp = await client.delete(f"{API}/{made['id']}", headers=auth(token))
    assert resp.status == 200 and await resp.json() == {"deleted": 2}
    assert [c["id"] for c in await listing(client, token)] == [untitled["id"]]
    assert (await history(client, token))[1] == []
    resp = await client.delete(f"{API}/{made['id']}", headers=auth(token))
    assert resp.status == 404 and "detail" in await resp.json()


async def test_a_new_conversation_takes_its_first_message_as_title(client):
    token, _ = await new_user(client)
    made = await create(client, token, title=None)  # null counts as absent
    assert made["title"] is None
    question = "Which plans are there, and what does each of them cost per month? " * 2
    status, _ = await chat(client, token, question, conversation_id=made["id"])
    assert status == 200
    [listed] = await listing(client, token)
    assert listed["title"] == question[:60] and listed["messages"] == 2
    # Only the first message names it.
    await chat(client, token, "and yearly?", conversation_id=made["id"])
    assert (await listing(client, token))[0]["title"] == question[:60]


async def test_without_conversation_id_the_most_recently_active_one(client):
    token, _ = await new_user(client)
    status, first = await chat(client, token, "Hello there, how do I reset my password?")
    assert status == 200
    conv = first["conversation_id"]
    [listed] = await listing(client, token)
    assert listed["id"] == conv and listed["title"] == "Hello there, how do I reset my password?"
    _, second = await chat(client, token, "thanks")
    assert second["conversation_id"] == conv
    # A newer conversation (even empty) is the most recently active one.
    fresh = await create(client, token)
    _, third = await chat(client, token, "another topic")
    assert third["conversation_id"] == fresh["id"]
    # Activity, not creation: writing to the older one makes it the default again.
    await chat(client, token, "back to passwords", conversation_id=conv)
    _, fifth = await chat(client, token, "still passwords")
    assert fifth["conversation_id"] == conv


async def test_history_items_carry_and_filter_by_conversation(client):
    token, _ = await new_user(client)
    a = await create(client, token, title="A")
    b = await create(client, token, title="B")
    await chat(client, token, "in a", conversation_id=a["id"])
    await chat(client, token, "in b", conversation_id=b["id"])
    status, every = await history(client, token)
    assert status == 200 and len(every) == 4
    assert [i["conversation_id"] for i in every] == [a["id"], a["id"], b["id"], b["id"]]
    status, only_b = await history(client, token, f"?conversation_id={b['id']}")
    assert status == 200 and only_b[0]["message"] == "in b" and len(only_b) == 2
    status, paged = await history(client, token, f"?conversation_id={b['id']}&limit=1")
    assert [i["is_user_message"] for i in paged] == [False]


async def test_paging_by_activity(client):
    token, _ = await new_user(client)
    made = [await create(client, token, title=f"c{n}") for n in range(5)]
    await chat(client, token, "wake c1", conversation_id=made[1]["id"])
    order = [made[1]["id"], made[4]["id"], made[3]["id"], made[2]["id"], made[0]["id"]]
    assert [c["id"] for c in await listing(client, token)] == order
    page = await listing(client, token, "?limit=2")
    assert [c["id"] for c in page] == order[:2]
    page = await listing(client, token, f"?limit=2&before={page[-1]['id']}")
    assert [c["id"] for c in page] == order[2:4]
    page = await listing(client, token, f"?before={page[-1]['id']}")
    assert [c["id"] for c in page] == order[4:]


async def assert_not_found(client, token: str, cid: int, question: str) -> None:
    """Conversation `cid` is not `token`'s: asking in it, reading, renaming and deleting
    it are each 404."""
    status, body = await chat(client, token, question, conversation_id=cid)
    assert status == 404 and "detail" in body
    status, _ = await history(client, token, f"?conversation_id={cid}")
    assert status == 404
    resp = await client.patch(f"{API}/{cid}", json={"title": "mine"}, headers=auth(token))
    assert resp.status == 404
    resp = await client.delete(f"{API}/{cid}", headers=auth(token))
    assert resp.status == 404


async def test_another_users_conversation_is_404_everywhere(client, db):
    owner, _ = await new_user(client)
    other, _ = await new_user(client)
    theirs = await create(client, owner, title="private")
    await chat(client, owner, "a secret question", conversation_id=theirs["id"])
    cid = theirs["id"]
    await assert_not_found(client, other, cid, "let me in")
    resp = await client.get(f"{API}?before={cid}", headers=auth(other))
    assert resp.status == 404
    assert await listing(client, other) == []
    # Nothing of the intruder was stored, and the owner's conversation is intact.
    assert await db.fetchval("SELECT count(*) FROM chat_history WHERE message = 'let me in'") == 0
    [listed] = await listing(client, owner)
    assert listed["title"] == "private" and listed["messages"] == 2


@pytest.mark.parametrize("cid", [0, -5, 2**63, 987654321])
async def test_unknown_conversation_ids_are_404(client, cid):
    token, _ = await new_user(client)
    await assert_not_found(client, token, cid, "hi")
    assert (await history(client, token))[1] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", API, {"title": ""}),
        ("post", API, {"title": "x" * 201}),
        ("post", API, {"title": 5}),
        ("post", API, {"title": "a\x00b"}),
        ("post", API, ["title"]),
        ("patch", API + "/{id}", {}),
        ("patch", API + "/{id}", {"title": None}),
        ("patch", API + "/{id}", {"title": ""}),
        ("patch", API + "/{id}", {"title": "x" * 201}),
        ("post", "/api/v1/chat/chat", {"message": "hi", "conversation_id": "1"}),
        ("post", "/api/v1/chat/chat", {"message": "hi", "conversation_id": True}),
        ("post", "/api/v1/chat/chat", {"message": "hi", "conversation_id": 1.5}),
    ],
)
async def test_bad_input_is_422(client, method, path, body):
    token, _ = await new_user(client)
    made = await create(client, token, title="t")
    resp = await getattr(client, method)(path.format(id=made["id"]), json=body, headers=auth(token))
    assert resp.status == 422, await resp.text()
    assert "detail" in await resp.json()


@pytest.mark.parametrize("query", ["?limit=0", "?limit=101", "?limit=x", "?before=x"])
async def test_bad_list_query_is_422(client, query):
    token, _ = await new_user(client)
    resp = await client.get(API + query, headers=auth(token))
    assert resp.status == 422


async def test_titles_of_200_characters_are_fine(client):
    token, _ = await new_user(client)
    made = await create(client, token, title="é" * 200)
    resp = await client.patch(
        f"{API}/{made['id']}", json={"title": "👍" * 200}, headers=auth(token)
    )
    assert resp.status == 200 and (await resp.json())["title"] == "👍" * 200


async def test_endpoints_need_a_token(client):
    for method, path in [
        ("get", API),
        ("post", API),
        ("patch", API + "/1"),
        ("delete", API + "/1"),
    ]:
        resp = await getattr(client, method)(path)
        assert resp.status == 401


async def test_deleting_a_conversation_deletes_its_feedback(client, db):
    token, user_id = await new_user(client)
    a = await create(client, token, title="a")
    b = await create(client, token, title="b")
    _, in_a = await chat(client, token, "in a", conversation_id=a["id"])
    _, in_b = await chat(client, token, "in b", conversation_id=b["id"])
    for answer in (in_a, in_b):
        resp = await client.put(
            f"/api/v1/chat/feedback/{answer['reply_id']}",
            json={"rating": "up"},
            headers=auth(token),
        )
        assert resp.status == 200
    resp = await client.delete(f"{API}/{a['id']}", headers=auth(token))
    assert await resp.json() == {"deleted": 2}
    kept = await db.fetch("SELECT reply_id FROM feedback WHERE user_id = $1", user_id)
    assert [r["reply_id"] for r in kept] == [in_b["reply_id"]]


async def test_delete_history_deletes_the_conversations_too(client):
    token, _ = await new_user(client)
    made = await create(client, token, title="x")
    await chat(client, token, "hello", conversation_id=made["id"])
    resp = await client.delete("/api/v1/chat/chat-history", headers=auth(token))
    assert await resp.json() == {"deleted": 2}
    assert await listing(client, token) == []


async def test_rest_resend_with_another_conversation_is_409(client):
    token, _ = await new_user(client)
    a = await create(client, token, title="a")
    b = await create(client, token, title="b")
    status, first = await chat(client, token, "hello", id="r1", conversation_id=a["id"])
    assert status == 200
    status, again = await chat(client, token, "hello", id="r1", conversation_id=a["id"])
    assert status == 200 and again["message_id"] == first["message_id"]
    status, again = await chat(client, token, "hello", id="r1")  # none named: no conflict
    assert status == 200 and again["conversation_id"] == a["id"]
    status, _ = await chat(client, token, "hello", id="r1", conversation_id=b["id"])
    assert status == 409


# -- WebSocket ---------------------------------------------------------------------------


async def test_ws_message_ack_and_other_tabs_carry_the_conversation(client):
    token, _ = await new_user(client)
    made = await create(client, token, title="ws")
    tab1 = await connect(client, token)
    tab2 = await connect(client, token)
    await tab1.send_str(frame(type="message", id="w1", text="hello", conversation_id=made["id"]))
    ack = await recv(tab1)
    assert ack["type"] == "ack" and ack["conversation_id"] == made["id"]
    echo = (await recv_until(tab2, "message", "w1"))[-1]
    assert echo["conversation_id"] == made["id"] and echo["message_id"] == ack["message_id"]
    await recv_until(tab1, "end", "w1")
    # No conversation named: the most recently active one (this one), as a v1 client does.
    await tab1.send_str(frame(type="message", id="w2", text="again"))
    ack = await recv(tab1)
    assert ack["type"] == "ack" and ack["conversation_id"] == made["id"]
    await recv_until(tab1, "end", "w2")
    await tab1.close()
    await tab2.close()


async def test_ws_unknown_or_foreign_conversation(client):
    owner, _ = await new_user(client)
    other, _ = await new_user(client)
    theirs = await create(client, owner, title="theirs")
    ws = await connect(client, other)
    for n, cid in enumerate([theirs["id"], 987654321, 0, -1, 2**63]):
        # Written by hand: the JSON encoder refuses integers past 64 bits.
        await ws.send_str(f'{{"type":"message","id":"x{n}","text":"hi","conversation_id":{cid}}}')
        error = await recv(ws)
        assert error == {
            "type": "error",
            "id": f"x{n}",
            "code": "unknown_conversation",
            "message": error["message"],
        }
    await ws.send_str(frame(type="message", id="bad", text="hi", conversation_id="1"))
    error = await recv(ws)
    assert error["code"] == "invalid_frame" and error["id"] == "bad"
    # Nothing was stored, and the connection still works.
    await ws.send_str(frame(type="ping"))
    assert (await recv(ws))["type"] == "pong"
    assert (await history(client, other))[1] == []
    await ws.close()


async def test_ws_resend_with_another_conversation_is_id_conflict(client):
    token, _ = await new_user(client)
    a = await create(client, token, title="a")
    b = await create(client, token, title="b")
    ws = await connect(client, token)
    await ws.send_str(frame(type="message", id="dup", text="hello", conversation_id=a["id"]))
    await recv_until(ws, "end", "dup")
    await ws.send_str(frame(type="message", id="dup", text="hello", conversation_id=b["id"]))
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "id_conflict" and error["id"] == "dup"
    await ws.close()


async def test_other_tabs_hear_of_created_renamed_deleted(client):
    token, _ = await new_user(client)
    other_token, _ = await new_user(client)
    tab = await connect(client, token)
    stranger = await connect(client, other_token)
    made = await create(client, token, title="fresh")
    assert await recv(tab) == {
        "type": "conversation",
        "event": "created",
        "id": made["id"],
        "title": "fresh",
    }
    await client.patch(f"{API}/{made['id']}", json={"title": "renamed"}, headers=auth(token))
    assert await recv(tab) == {
        "type": "conversation",
        "event": "renamed",
        "id": made["id"],
        "title": "renamed",
    }
    await client.delete(f"{API}/{made['id']}", headers=auth(token))
    assert await recv(tab) == {
        "type": "conversation",
        "event": "deleted",
        "id": made["id"],
        "title": None,
    }
    # Another user hears nothing of it.
    await stranger.send_str(frame(type="ping"))
    assert await recv(stranger) == {"type": "pong"}
    await tab.close()
    await stranger.close()


async def test_two_conversations_at_once_stay_apart(client):
    token, _ = await new_user(client)
    a = await create(client, token, title="a")
    b = await create(client, token, title="b")
    results = await asyncio.gather(
        *[
            chat(client, token, f"q{n}", conversation_id=(a if n % 2 else b)["id"])
            for n in range(10)
        ]
    )
    assert all(status == 200 for status, _ in results)
    for conv, parity in ((a, 1), (b, 0)):
        _, items = await history(client, token, f"?conversation_id={conv['id']}")
        questions = {i["message"] for i in items if i["is_user_message"]}
        assert questions == {f"q{n}" for n in range(10) if n % 2 == parity}
        replies = [i for i in items if not i["is_user_message"]]
        assert len(replies) == 5 and all(r["conversation_id"] == conv["id"] for r in replies)
