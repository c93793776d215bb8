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
    """200 only while the database answers and the server is not shutting down."""
    if request.app[keys.SHUTDOWN].is_set():
        return json_response({"status": "shutting down"}, 503, {"Retry-After": "5"})
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await queries.ping(request.app[keys.POOL])
    except Exception:
        return json_response({"status": "database unavailable"}, 503, {"Retry-After": "5"})
    return json_response({"status": "ready"})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
