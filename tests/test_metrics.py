"""`GET /metrics`: the Prometheus text format, parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.accounts import TEST_SECRET
from tests.processes import server_process


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests_total(found, method: str, route: str, status: str) -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return found.get(("http_requests_total", labels), 0.0)


async def test_requests_are_counted_by_route_template_and_status(client, user):
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.get("/api/v1/auth/me")).status == 401
    assert (await client.get("/api/v1/auth/me", headers=user["headers"])).status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    found = samples(await resp.text())
    assert requests_total(found, "GET", "/healthz", "200") == 3
    assert requests_total(found, "GET", "unmatched", "404") == 1
    assert requests_total(found, "GET", "/api/v1/auth/me", "401") == 1
    assert requests_total(found, "GET", "/api/v1/auth/me", "200") == 1
    assert requests_total(found, "POST", "/api/v1/auth/signup", "201") == 1  # the user fixture
    # Durations are observed for the same requests; /metrics itself is not counted.
    duration = (("method", "GET"), ("route", "/healthz"))
    assert found[("http_request_duration_seconds_count", duration)] == 3
    assert not any(labels and ("route", "/metrics") in labels for _, labels in found)


async def test_paths_with_ids_are_labelled_by_their_template(client):
    resp = await client.get("/api/v1/admin/documents/some-id")
    assert resp.status == 401
    found = samples(await (await client.get("/metrics")).text())
    assert requests_total(found, "GET", "/api/v1/admin/documents/{id}", "401") == 1


async def test_metrics_token_guards_the_endpoint(aiohttp_client, make_settings):
    from server.app import create_app

    client = await aiohttp_client(create_app(make_settings(metrics_token="scrape-me-0123")))
    assert (await client.get("/metrics")).status == 401
    wrong = {"Authorization": "Bearer scrape-me-9999"}
    resp = await client.get("/metrics", headers=wrong)
    assert resp.status == 401
    assert "detail" in await resp.json()
    right = {"Authorization": "Bearer scrape-me-0123"}
    assert (await client.get("/metrics", headers=right)).status == 200


async def test_one_scrape_covers_every_worker(tmp_path, database_url):
    """WORKERS=2: requests spread over both processes; any worker's scrape counts them all."""
    files = tmp_path / "var" / "metrics"
    async with server_process(tmp_path, database_url, TEST_SECRET, WORKERS="2") as server:

        async def healthz() -> None:
            async with (  # a new connection each: the kernel spreads them over workers
                aiohttp.ClientSession() as session,
                session.get(server.url + "/healthz") as resp,
            ):
                assert resp.status == 200

        # The server answers once one worker listens; the other may still be starting.
        # Until each worker has counted something in a file of its own, keep asking.
        sent = 0
        deadline = asyncio.get_running_loop().time() + 30
        while len(list(files.glob("counter_*.db"))) < 2:
            assert asyncio.get_running_loop().time() < deadline, "one worker never counted"
            await healthz()
            sent += 1
        for _ in range(40):
            await healthz()
            sent += 1
        for _ in range(3):  # every scrape, on whichever worker takes it, sees the same total
            async with (
                aiohttp.ClientSession() as session,
                session.get(server.url + "/metrics") as resp,
            ):
                found = samples(await resp.text())
            assert requests_total(found, "GET", "/healthz", "200") == sent
        # Both workers counted, each in its own file: the totals above are their sum.
        assert len(list(files.glob("counter_*.db"))) == 2


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client) -> dict:
    return samples(await (await client.get("/metrics")).text())


async def test_chat_metrics_count_what_was_sent(client, user):
    from tests.chat.ws import connect, recv_until

    headers = user["headers"]
    for i in range(2):
        body = {"message": "How do I embed the widget?", "id": f"m{i}"}
        assert (await client.post("/api/v1/chat/chat", json=body, headers=headers)).status == 200
    body = {"message": "How do I embed the widget?", "id": "m0"}  # a resend: no new message
    assert (await client.post("/api/v1/chat/chat", json=body, headers=headers)).status == 200

    ws = await connect(client, user["token"])
    await ws.send_json({"type": "message", "id": "w1", "text": "What is ALLOWED_ORIGINS?"})
    await recv_until(ws, "end", "w1")
    found = await scrape(client)
    assert value(found, "chat_connections") == 1
    assert value(found, "chat_messages_total") == 3
    assert value(found, "chat_replies_total", finish_reason="stop") == 3
    assert value(found, "chat_first_token_seconds_count") == 3
    assert value(found, "llm_errors_total") == 0
    await ws.close()

    for _ in range(100):  # the server notices the close on its side
        found = await scrape(client)
        if value(found, "chat_connections") == 0:
            break
        await asyncio.sleep(0.02)
    assert value(found, "chat_connections") == 0


async def test_llm_failures_and_purged_rows_are_counted(aiohttp_client, make_settings, db):
    from server import keys
    from server.app import create_app
    from tests.accounts import signup
    from tests.jobs.history_rows import OLD, add_row

    settings = make_settings(openai_api_key="sk-test", openai_base_url="http://127.0.0.1:9/v1")
    client = await aiohttp_client(create_app(settings))
    _, token, user_id = await signup(client)
    body = {"message": "anything"}
    resp = await client.post(
        "/api/v1/chat/chat", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 502
    for _ in range(3):
        await add_row(db, user_id, OLD)
    result = await client.app[keys.PURGE].run_once()
    found = await scrape(client)
    assert value(found, "llm_errors_total") == 1
    assert value(found, "chat_replies_total", finish_reason="error") == 1
    assert value(found, "purge_deleted_rows_total") == result.deleted >= 3
