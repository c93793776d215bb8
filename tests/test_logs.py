"""Request ids on every answer, and JSON logs that carry them (LOG_FORMAT=json)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from server.settings import Settings, SettingsError
from tests.accounts import PASSWORD, TEST_SECRET, unique_email
from tests.processes import server_process


async def test_a_safe_client_id_is_echoed_and_errors_carry_it(client):
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x_y"})
    assert resp.headers["X-Request-ID"] == "abc-123.x_y"
    for path in ("/no/such/path", "/api/v1/auth/me"):  # a 404 and a 401
        resp = await client.get(path, headers={"X-Request-ID": "err-1"})
        assert resp.status in (401, 404)
        assert resp.headers["X-Request-ID"] == "err-1"
    resp = await client.post("/api/v1/auth/login", json={}, headers={"X-Request-ID": "err-2"})
    assert resp.status == 422
    assert resp.headers["X-Request-ID"] == "err-2"


@pytest.mark.parametrize("sent", [None, "", "has space", "x" * 65, 'quote"d', "ünï"])
async def test_anything_else_gets_a_fresh_id(client, sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    first = (await client.get("/healthz", headers=headers)).headers["X-Request-ID"]
    second = (await client.get("/healthz", headers=headers)).headers["X-Request-ID"]
    assert first != sent and len(first) == 32 and first != second


def test_log_format_is_text_or_json():
    assert Settings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(SettingsError, match=r"^LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})


async def test_json_logs_carry_the_request_id(tmp_path, database_url):
    async with server_process(tmp_path, database_url, TEST_SECRET, LOG_FORMAT="json") as server:
        async with aiohttp.ClientSession() as session:
            body = {"email": unique_email(), "password": PASSWORD}
            headers = {"X-Request-ID": "signup-42"}
            async with session.post(
                server.url + "/api/v1/auth/signup", json=body, headers=headers
            ) as resp:
                assert resp.status == 201
                assert resp.headers["X-Request-ID"] == "signup-42"
        await server.stop()
        records = [
            orjson.loads(line) for line in server.output().splitlines() if line.startswith("{")
        ]
    assert records, server.output()
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    # The verification mail, written to the log in the background, belongs to the signup.
    mail = [r for r in records if r["logger"] == "server.mail"]
    assert mail and all(r["request_id"] == "signup-42" for r in mail)
