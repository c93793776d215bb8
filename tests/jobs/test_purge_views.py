"""The purge's admin endpoints: the status of runs, and a run on demand."""

from __future__ import annotations

from datetime import datetime

from server.app import create_app
from server.jobs.purge import PurgeJob
from tests.accounts import signup, unique_email
from tests.jobs.history_rows import (
    OLD,
    add_row,
    connector,
    row_ids,
)


async def test_admin_endpoint_shows_and_runs_the_purge(aiohttp_client, make_settings, db):
    admin_email = unique_email("Admin")
    settings = make_settings(admin_emails=frozenset({admin_email.lower()}), purge_cron="0 4 * * *")
    client = await aiohttp_client(create_app(settings))
    _, admin_token, admin_id = await signup(client, admin_email)
    await db.execute("UPDATE users SET is_verified = true WHERE id = $1", admin_id)
    _, user_token, user_id = await signup(client)
    admin = {"Authorization": f"Bearer {admin_token}"}
    user = {"Authorization": f"Bearer {user_token}"}

    assert (await client.get("/api/v1/admin/purge")).status == 401
    for method in (client.get, client.post):
        resp = await method("/api/v1/admin/purge", headers=user)
        assert resp.status == 403
        assert "detail" in await resp.json()

    resp = await client.get("/api/v1/admin/purge", headers=admin)
    assert resp.status == 200
    body = await resp.json()
    assert body["last_run"] is None
    assert body["schedule"] == "0 4 * * *"
    assert body["retention_days"] == 30

    old = await add_row(db, user_id, OLD)
    resp = await client.post("/api/v1/admin/purge", headers=admin)
    assert resp.status == 200
    ran = await resp.json()
    assert ran["status"] == "ok"
    assert ran["deleted"] >= 1
    assert old not in await row_ids(db, user_id)

    body = await (await client.get("/api/v1/admin/purge", headers=admin)).json()
    assert body["last_run"] == ran
    assert body["last_ok"] == ran
    assert set(ran) == {
        "started_at",
        "finished_at",
        "deleted",
        "deleted_other",
        "duration_s",
        "status",
        "error",
    }


async def test_an_admin_sees_the_newest_run_of_any_instance(
    aiohttp_client, make_settings, database_url, db
):
    admin_email = unique_email("admin")
    client = await aiohttp_client(create_app(make_settings(admin_emails=frozenset({admin_email}))))
    _, admin_token, admin_id = await signup(client, admin_email)
    await db.execute("UPDATE users SET is_verified = true WHERE id = $1", admin_id)
    elsewhere = PurgeJob(connector(database_url), retention_days=30)  # another instance

    ran = await elsewhere.run_once()

    resp = await client.get(
        "/api/v1/admin/purge", headers={"Authorization": f"Bearer {admin_token}"}
    )
    body = await resp.json()
    assert body["last_run"] is None  # this instance has not run it
    seen = body["last_ok"]
    assert (seen["deleted"], seen["deleted_other"], seen["status"]) == (
        ran.deleted,
        ran.deleted_other,
        "ok",
    )
    for at in ("started_at", "finished_at"):
        assert datetime.fromisoformat(seen[at].replace("Z", "+00:00")) == getattr(ran, at)
