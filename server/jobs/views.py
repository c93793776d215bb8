"""The purge inside the app: its cleanup context (the schedule) and its admin endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web
from cronsim import CronSim

from server import keys
from server.auth.guards import require_admin
from server.db import operators as operators_sql
from server.http import json_response
from server.jobs.purge import PurgeJob


async def purge_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    job = PurgeJob(
        app[keys.POOL].acquire,
        settings.history_retention_days,
        settings.purge_batch_size,
        deleted_rows=app[keys.METRICS].purge_deleted,
    )
    app[keys.PURGE] = job
    job.start(settings.purge_cron)
    yield
    await job.stop()


def _next_run(spec: str) -> datetime | None:
    try:
        return next(CronSim(spec, datetime.now(UTC)))
    except Exception:  # the schedule was validated at start-up; this is only a hint
        return None


async def purge_status(request: web.Request) -> web.Response:
    """GET /api/v1/admin/purge: this instance's last run, the newest successful run of any
    instance, the schedule and the retention."""
    await require_admin(request)
    settings = request.app[keys.SETTINGS]
    job = keys.get(request.app, keys.PURGE)
    last_ok = await job.newest_ok()
    return json_response(
        {
            "last_run": job.last_run.as_json() if job.last_run else None,
            "last_ok": last_ok.as_json() if last_ok else None,
            "schedule": settings.purge_cron,
            "next_run": _next_run(settings.purge_cron),
            "retention_days": settings.history_retention_days,
        }
    )


async def purge_now(request: web.Request) -> web.Response:
    """POST /api/v1/admin/purge: run the purge now and answer with its result."""
    admin = await require_admin(request)
    result = await keys.get(request.app, keys.PURGE).run_now()
    await operators_sql.record(request.app[keys.POOL], admin, "purge run", result.status)
    return json_response(result.as_json())


def setup_jobs(app: web.Application) -> None:
    """The purge's admin routes (`purge_context` is listed in create_app)."""
    app.router.add_get("/api/v1/admin/purge", purge_status)
    app.router.add_post("/api/v1/admin/purge", purge_now)
