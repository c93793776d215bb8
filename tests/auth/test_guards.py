"""The one admin guard: every admin endpoint, the purge's included, asks the same."""

from __future__ import annotations

import pytest

from server.app import create_app
from server.settings import Settings
from tests.accounts import signup, unique_email


def admin_routes(app) -> list[tuple[str, str]]:
    """Every admin endpoint the app has (future ones included), as (method, path)."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if path.startswith("/api/v1/admin") and route.method not in ("HEAD", "OPTIONS"):
            found.add((route.method, path.replace("{id:.+}", "x").replace("{id}", "1")))
    return sorted(found)


@pytest.fixture
async def guarded(aiohttp_client, make_settings, db):
    email = unique_email("admin")
    # Listed as the operator typed it: another case, a full-width domain.
    listed = email.upper().replace("EXAMPLE.COM", "ＥＸＡＭＰＬＥ.com")
    settings = make_settings(admin_emails=Settings.from_env({"ADMIN_EMAILS": listed}).admin_emails)
    app = create_app(settings)
    client = await aiohttp_client(app)
    return client, app, email


async def test_every_admin_endpoint_refuses_an_unverified_listed_address(guarded, db):
    client, app, email = guarded
    routes = admin_routes(app)
    assert ("POST", "/api/v1/admin/purge") in routes and (
        "GET",
        "/api/v1/admin/documents",
    ) in routes
    _, token, user_id = await signup(client, email.upper())
    headers = {"Authorization": f"Bearer {token}"}
    for method, path in routes:
        resp = await client.request(method, path, headers=headers, json={})
        assert resp.status == 403, (method, path, await resp.text())
        assert "ADMIN_EMAILS" in (await resp.json())["detail"]
        assert (await client.request(method, path, json={})).status == 401, (method, path)

    await db.execute("UPDATE users SET is_verified = true WHERE id = $1", user_id)
    for path in ("/api/v1/admin/purge", "/api/v1/admin/documents"):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200, (path, await resp.text())


async def test_a_verified_user_not_listed_is_refused(guarded, db):
    client, app, _ = guarded
    _, token, user_id = await signup(client)
    await db.execute("UPDATE users SET is_verified = true WHERE id = $1", user_id)
    for method, path in admin_routes(app):
        resp = await client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, json={}
        )
        assert resp.status == 403, (method, path)
