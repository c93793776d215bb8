"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server import keys
from server.db import queries
from server.http import json_response

READY_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 only while the database answers and the server is not shutting down.

    The fan-out does not decide readiness: without it (Redis away, say) this
    instance still serves its own connections and PostgreSQL stays the record,
    so the body only says `"fanout": "degraded"` (else `"ok"`)."""
    if request.app[keys.SHUTDOWN].is_set():
        return json_response({"status": "shutting down"}, 503, {"Retry-After": "5"})
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await queries.ping(request.app[keys.POOL])
    except Exception:
        return json_response({"status": "database unavailable"}, 503, {"Retry-After": "5"})
    fanout = request.app.get(keys.FANOUT)
    connected = fanout is not None and fanout.listening.is_set()
    return json_response({"status": "ready", "fanout": "ok" if connected else "degraded"})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
