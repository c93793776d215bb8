"""The admin documents API, seeding, and live re-indexing on every instance.

Each test serves a knowledge file of its own (a unique file name, so a collection
of its own in the shared test database) and never touches anyone else's documents.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from server.answers import store
from server.answers.admin import MAX_CONTENT_CHARS, openapi_paths
from server.app import create_app
from server.docs import build_openapi
from server.keys import KNOWLEDGE
from server.settings import SettingsError
from tests.accounts import signup, unique_email

DOCS = "/api/v1/admin/documents"
SEED = [
    {
        "id": "teapots",
        "topic": "Teapot care",
        "content": "Rinse the teapot with hot water and never use soap on unglazed clay.",
    },
    {
        "id": "kettles",
        "topic": "Kettle descaling",
        "content": "Descale the kettle monthly with citric acid dissolved in water.",
    },
    {"topic": "Porcelain cups", "content": "Porcelain cups keep tea hot longer than glass."},
]
SEEDED = [
    {"id": d.get("id", str(n)), "topic": d["topic"], "content": d["content"]}
    for n, d in enumerate(SEED, start=1)
]
SAMOVAR = {
    "id": "samovar",
    "topic": "Samovar heating",
    "content": "A samovar heats water with charcoal burning in its central chimney.",
}
SAMOVAR_QUESTION = "How does a samovar heat its water?"


def without_time(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "updated_at"} for d in docs]


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
def kb_path(tmp_path: Path) -> Path:
    path = tmp_path / f"kb-{uuid.uuid4().hex[:10]}.json"
    path.write_text(json.dumps(SEED))
    return path


@pytest.fixture
def admin_email() -> str:
    return unique_email("admin")


@pytest.fixture
def kb_settings(make_settings, kb_path, admin_email):
    return make_settings(knowledge_path=kb_path, admin_emails=frozenset({admin_email}))


@pytest.fixture
async def kb_client(aiohttp_client, kb_settings):
    return await aiohttp_client(create_app(kb_settings))


async def verified_headers(client, db, email: str) -> dict[str, str]:
    _, token, user_id = await signup(client, email)
    await db.execute("UPDATE users SET is_verified = true WHERE id = $1", user_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin(kb_client, db, admin_email) -> dict[str, str]:
    return await verified_headers(kb_client, db, admin_email)


async def ask(client, headers, question: str) -> dict[str, Any]:
    resp = await client.post("/api/v1/chat/chat", json={"message": question}, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def listed(client, headers) -> list[dict[str, Any]]:
    resp = await client.get(DOCS, headers=headers)
    assert resp.status == 200, await resp.text()
    return without_time(await resp.json())


# --- permissions ---------------------------------------------------------------------------


ENDPOINTS = [
    ("GET", DOCS, None),
    ("GET", DOCS + "/teapots", None),
    ("POST", DOCS, SAMOVAR),
    ("PUT", DOCS + "/teapots", {"topic": "T", "content": "C"}),
    ("DELETE", DOCS + "/teapots", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_non_admin_gets_403_and_no_token_401(kb_client, db, method, path, body):
    user = await verified_headers(kb_client, db, unique_email())
    resp = await kb_client.request(method, path, json=body, headers=user)
    assert resp.status == 403
    assert "administrators" in (await resp.json())["detail"]

    resp = await kb_client.request(method, path, json=body)
    assert resp.status == 401
    resp = await kb_client.request(method, path, json=body, headers={"Authorization": "Bearer x"})
    assert resp.status == 401

    # Nothing changed for anyone.
    rows = await db.fetch(
        "SELECT id FROM knowledge_documents WHERE collection = $1 ORDER BY position",
        kb_client.app[KNOWLEDGE].collection,
    )
    assert [r["id"] for r in rows] == [d["id"] for d in SEEDED]


async def test_admin_email_must_be_verified(kb_client, db, admin_email):
    _, token, user_id = await signup(kb_client, admin_email.upper())
    headers = {"Authorization": f"Bearer {token}"}
    resp = await kb_client.get(DOCS, headers=headers)
    assert resp.status == 403
    assert "verified" in (await resp.json())["detail"]
    await db.execute("UPDATE users SET is_verified = true WHERE id = $1", user_id)
    assert await listed(kb_client, headers) == SEEDED


# --- seeding -------------------------------------------------------------------------------


async def test_the_file_seeds_its_own_collection_in_order(kb_client, admin, kb_path):
    assert await listed(kb_client, admin) == SEEDED
    resp = await kb_client.get(DOCS + "/3", headers=admin)
    assert resp.status == 200
    body = await resp.json()
    assert without_time([body]) == [SEEDED[2]] and body["updated_at"].endswith("Z")
    assert kb_client.app[KNOWLEDGE].collection == kb_path.name


async def test_two_instances_starting_at_once_seed_once(aiohttp_client, kb_settings, db):
    a, b = await asyncio.gather(
        aiohttp_client(create_app(kb_settings)), aiohttp_client(create_app(kb_settings))
    )
    rows = await db.fetch(
        "SELECT id FROM knowledge_documents WHERE collection = $1 ORDER BY position",
        kb_settings.knowledge_path.name,
    )
    assert [r["id"] for r in rows] == [d["id"] for d in SEEDED]
    assert a.app[KNOWLEDGE].version == b.app[KNOWLEDGE].version == 1


async def test_changes_survive_a_restart_and_emptying_never_reseeds(
    aiohttp_client, kb_client, admin, kb_settings
):
    for doc in SEEDED:
        resp = await kb_client.delete(f"{DOCS}/{doc['id']}", headers=admin)
        assert resp.status == 200
    assert await listed(kb_client, admin) == []
    answer = await ask(kb_client, admin, "How do I care for a teapot?")
    assert answer["sources"] == [] and "no information" in answer["response"]
    await kb_client.close()

    restarted = await aiohttp_client(create_app(kb_settings))
    assert await listed(restarted, admin) == []
    assert restarted.app[KNOWLEDGE].version == 1 + len(SEEDED)


async def test_a_changed_file_reseeds_its_collection_on_restart(
    aiohttp_client, kb_client, admin, kb_settings, kb_path
):
    resp = await kb_client.post(DOCS, json=SAMOVAR, headers=admin)
    assert resp.status == 201
    await kb_client.close()
    replacement = [{"id": "only", "topic": "Kettles", "content": "Descale a kettle with vinegar."}]
    kb_path.write_text(json.dumps(replacement))

    restarted = await aiohttp_client(create_app(kb_settings))
    assert await listed(restarted, admin) == replacement
    answer = await ask(restarted, admin, "How do I descale a kettle?")
    assert [s["id"] for s in answer["sources"]] == ["only"]


async def test_an_unreadable_knowledge_file_stops_start_up_naming_the_setting(
    make_settings, tmp_path
):
    path = tmp_path / f"bad-{uuid.uuid4().hex[:10]}.json"
    path.write_text('[{"topic": "no content"}]')
    runner = web.AppRunner(create_app(make_settings(knowledge_path=path)))
    try:
        with pytest.raises(SettingsError, match=r"^KNOWLEDGE_PATH: .*content"):
            await runner.setup()
    finally:
        await runner.cleanup()


async def test_an_id_with_control_characters_gets_an_encoded_location(kb_client, admin):
    doc = {"id": "a\x04b/c d", "topic": "Odd id", "content": "An id may hold any character."}
    resp = await kb_client.post(DOCS, json=doc, headers=admin)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"{DOCS}/a%04b%2Fc%20d"
    assert (await kb_client.delete(resp.headers["Location"], headers=admin)).status == 200


# --- live updates: the very next answer ------------------------------------------------------


async def test_an_added_document_answers_the_very_next_question(kb_client, admin):
    before = await ask(kb_client, admin, SAMOVAR_QUESTION)
    assert "samovar" not in [s["id"] for s in before["sources"]]

    resp = await kb_client.post(DOCS, json=SAMOVAR, headers=admin)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"{DOCS}/samovar"
    assert without_time([await resp.json()]) == [SAMOVAR]

    after = await ask(kb_client, admin, SAMOVAR_QUESTION)
    assert after["sources"][0]["id"] == "samovar"
    assert SAMOVAR["content"] in after["response"]
    assert await listed(kb_client, admin) == [*SEEDED, SAMOVAR]


async def test_the_very_next_websocket_answer_sees_a_replacement(kb_client, admin):
    from tests.chat.ws import connect, recv_until

    ws = await connect(kb_client, admin["Authorization"].split()[1])
    new = "Warm the teapot first, then brew green tea at eighty degrees for two minutes."
    resp = await kb_client.put(
        DOCS + "/teapots", json={"topic": "Teapot care", "content": new}, headers=admin
    )
    assert resp.status == 200
    await ws.send_json({"type": "message", "id": "q1", "text": "How do I care for a teapot?"})
    frames = await recv_until(ws, "end", "q1")
    start = next(f for f in frames if f["type"] == "start")
    assert start["sources"][0]["id"] == "teapots"
    assert new in frames[-1]["text"] and "soap" not in frames[-1]["text"]
    await ws.close()


async def test_replace_keeps_the_place_and_put_of_a_new_id_adds_it_last(kb_client, admin):
    replaced = {"id": "kettles", "topic": "Kettle care", "content": "Empty the kettle daily."}
    resp = await kb_client.put(
        DOCS + "/kettles",
        json={"topic": "Kettle care", "content": " Empty the kettle daily. "},
        headers=admin,
    )
    assert resp.status == 200
    assert without_time([await resp.json()]) == [replaced]

    resp = await kb_client.put(
        DOCS + "/samovar",
        json={"topic": SAMOVAR["topic"], "content": SAMOVAR["content"]},
        headers=admin,
    )
    assert resp.status == 200
    assert await listed(kb_client, admin) == [SEEDED[0], replaced, SEEDED[2], SAMOVAR]
    answer = await ask(kb_client, admin, "How often should I empty the kettle?")
    assert answer["sources"][0]["id"] == "kettles"
    assert "Empty the kettle daily." in answer["response"]
    assert "citric" not in answer["response"]


async def test_a_deleted_document_is_gone_from_the_very_next_answer(kb_client, admin):
    assert (await ask(kb_client, admin, "How do I descale a kettle?"))["sources"][0]["id"] == (
        "kettles"
    )
    resp = await kb_client.delete(DOCS + "/kettles", headers=admin)
    assert resp.status == 200 and await resp.json() == {"deleted": "kettles"}
    answer = await ask(kb_client, admin, "How do I descale a kettle?")
    assert "kettles" not in [s["id"] for s in answer["sources"]]
    assert "citric" not in answer["response"]

    resp = await kb_client.delete(DOCS + "/kettles", headers=admin)
    assert resp.status == 404 and "kettles" in (await resp.json())["detail"]
    resp = await kb_client.get(DOCS + "/kettles", headers=admin)
    assert resp.status == 404


async def test_ids_with_slashes_and_generated_ids(kb_client, admin):
    resp = await kb_client.post(
        DOCS, json={"id": "guides/brewing", "topic": "Brewing", "content": "Steep."}, headers=admin
    )
    assert resp.status == 201
    resp = await kb_client.get(DOCS + "/guides/brewing", headers=admin)
    assert resp.status == 200 and (await resp.json())["topic"] == "Brewing"
    resp = await kb_client.get(DOCS + "/guides%2Fbrewing", headers=admin)
    assert resp.status == 200

    resp = await kb_client.post(DOCS, json={"topic": "Mugs", "content": "Mugs."}, headers=admin)
    assert resp.status == 201
    made = (await resp.json())["id"]
    assert len(made) == 32 and made in [d["id"] for d in await listed(kb_client, admin)]

    resp = await kb_client.post(DOCS, json=SAMOVAR, headers=admin)
    assert resp.status == 201
    resp = await kb_client.post(DOCS, json={**SAMOVAR, "topic": "Other"}, headers=admin)
    assert resp.status == 409 and "samovar" in (await resp.json())["detail"]
    resp = await kb_client.get(DOCS + "/samovar", headers=admin)
    assert (await resp.json())["topic"] == SAMOVAR["topic"]


async def test_a_document_larger_than_a_chat_request_is_accepted(kb_client, admin, kb_settings):
    tail = " Gyokuro bushes are shaded for three weeks before the harvest."
    filler = "Oolong leaves unfurl slowly in water just off the boil. " * 2000
    content = filler[: MAX_CONTENT_CHARS - len(tail)].strip() + tail
    assert len(content) == MAX_CONTENT_CHARS  # exactly at the limit
    assert len(content.encode()) > kb_settings.max_body_bytes
    resp = await kb_client.post(
        DOCS, json={"id": "oolong", "topic": "Oolong", "content": content}, headers=admin
    )
    assert resp.status == 201, await resp.text()
    answer = await ask(kb_client, admin, "How long are gyokuro bushes shaded?")
    assert answer["sources"][0]["id"].startswith("oolong#")
    assert tail.strip() in answer["response"]

    huge = json.dumps({"id": "huge", "topic": "Huge", "content": "x" * 2_000_000}).encode()
    resp = await kb_client.post(
        DOCS,
        data=io.BytesIO(huge),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert resp.status == 413


BAD_BODIES = [
    ({"topic": "T"}, "content: field required"),
    ({"topic": "T", "content": 5}, "content: must be a string"),
    ({"topic": "   ", "content": "C"}, "topic: must be 1 to 200"),
    ({"topic": "T" * 201, "content": "C"}, "topic: must be 1 to 200"),
    ({"topic": "T", "content": "C" * (MAX_CONTENT_CHARS + 1)}, "content: must be 1 to 100000"),
    ({"topic": "T", "content": "a\x00b"}, "NUL"),
    ({"id": "a#b", "topic": "T", "content": "C"}, "id: must not contain '#'"),
    ({"id": "", "topic": "T", "content": "C"}, "id: must be 1 to 200"),
    ({"id": "i" * 201, "topic": "T", "content": "C"}, "id: must be 1 to 200"),
    ({"id": " padded", "topic": "T", "content": "C"}, "white space"),
    ({"id": "a\x00", "topic": "T", "content": "C"}, "NUL"),
    ({"id": 7, "topic": "T", "content": "C"}, "id: must be a string"),
    (["not", "an", "object"], "JSON object"),
]


@pytest.mark.parametrize(("body", "detail"), BAD_BODIES)
async def test_bad_documents_get_422(kb_client, admin, body, detail):
    resp = await kb_client.post(DOCS, json=body, headers=admin)
    assert resp.status == 422
    assert detail in (await resp.json())["detail"]
    assert await listed(kb_client, admin) == SEEDED


async def test_bad_put_requests(kb_client, admin):
    resp = await kb_client.put(
        DOCS + "/teapots", json={"id": "kettles", "topic": "T", "content": "C"}, headers=admin
    )
    assert resp.status == 422 and "path" in (await resp.json())["detail"]
    resp = await kb_client.put(DOCS + "/a%23b", json={"topic": "T", "content": "C"}, headers=admin)
    assert resp.status == 422
    resp = await kb_client.put(DOCS + "/teapots", data=b"{", headers=admin)
    assert resp.status == 415
    resp = await kb_client.put(
        DOCS + "/teapots",
        data=b"{",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert await listed(kb_client, admin) == SEEDED


# --- other instances ---------------------------------------------------------------------------


async def test_every_instance_picks_up_a_change(aiohttp_client, kb_client, admin, kb_settings):
    other = await aiohttp_client(create_app(kb_settings))
    resp = await kb_client.post(DOCS, json=SAMOVAR, headers=admin)
    assert resp.status == 201
    live = other.app[KNOWLEDGE]
    await eventually(lambda: live.version == kb_client.app[KNOWLEDGE].version)
    answer = await ask(other, admin, SAMOVAR_QUESTION)
    assert answer["sources"][0]["id"] == "samovar"


async def test_a_lost_listener_reconnects_and_catches_up(
    aiohttp_client, kb_client, admin, kb_settings, db
):
    other = await aiohttp_client(create_app(kb_settings))
    lives = [kb_client.app[KNOWLEDGE], other.app[KNOWLEDGE]]
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = $1",
        store.LISTENER_NAME,
    )
    assert killed >= 2
    await eventually(lambda: not any(live.listening.is_set() for live in lives))

    # Committed while nobody listens: the other instance finds it when it reconnects.
    resp = await kb_client.post(DOCS, json=SAMOVAR, headers=admin)
    assert resp.status == 201
    await eventually(lambda: lives[1].version == lives[0].version)
    assert (await ask(other, admin, SAMOVAR_QUESTION))["sources"][0]["id"] == "samovar"

    # And notices arrive again.
    await eventually(lambda: all(live.listening.is_set() for live in lives))
    resp = await kb_client.delete(DOCS + "/samovar", headers=admin)
    assert resp.status == 200
    await eventually(lambda: lives[1].version == lives[0].version)
    assert "samovar" not in [
        s["id"] for s in (await ask(other, admin, SAMOVAR_QUESTION))["sources"]
    ]


async def test_reload_requests_are_coalesced(kb_client, db):
    live = kb_client.app[KNOWLEDGE]
    await live.refresh()  # settle the start-up catch-up
    rebuilds = live.rebuilds
    # A change made behind the server's back (no NOTIFY): only a reload finds it.
    version = await db.fetchval(
        "WITH added AS (INSERT INTO knowledge_documents (collection, id, topic, content, position)"
        " VALUES ($1, $2, $3, $4, 100))"
        " UPDATE knowledge_collections SET version = version + 1 WHERE name = $1"
        " RETURNING version",
        live.collection,
        SAMOVAR["id"],
        SAMOVAR["topic"],
        SAMOVAR["content"],
    )

    # Requests made before a reload starts share it.
    first = [live.refresh() for _ in range(5)]
    assert all(f is first[0] for f in first)
    await asyncio.sleep(0)  # the reload is running now
    # Requests made while it runs share exactly one more run after it.
    second = [live.refresh() for _ in range(5)]
    assert all(f is second[0] for f in second) and second[0] is not first[0]
    assert await first[0] == version
    assert await second[0] == version
    # One rebuild: the second run found nothing newer.
    assert live.rebuilds == rebuilds + 1
    assert live.pipeline.retrieve(SAMOVAR_QUESTION)[0].passage.id == "samovar"


def test_openapi_paths_describe_every_admin_operation() -> None:
    paths = openapi_paths()
    # The only component referred to is the server's own Error schema.
    assert "Error" in build_openapi("Chat Server", "1")["components"]["schemas"]
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(paths))
    assert refs and set(refs) == {"#/components/schemas/Error"}
    assert set(paths[DOCS]) == {"get", "post"}
    assert set(paths[DOCS + "/{id}"]) == {"get", "put", "delete"}
    for item in paths.values():
        for op in item.values():
            assert op["security"] == [{"bearer": []}]
            assert {"401", "403"} <= set(op["responses"])
    assert "201" in paths[DOCS]["post"]["responses"]
    assert "409" in paths[DOCS]["post"]["responses"]
