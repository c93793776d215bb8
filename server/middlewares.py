"""Errors as JSON `{"detail"}`: no HTML error page, no traceback, no 500 for bad input."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web

from server.http import APIError, json_response

log = logging.getLogger(__name__)

# Errors that mean "the database is away", answered 503 with Retry-After.
DB_UNAVAILABLE = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    TimeoutError,
)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except APIError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        detail = exc.reason
        if exc.status == 413:
            detail = "request body too large"
        return json_response({"detail": detail}, exc.status, headers=_passthrough(exc))
    except asyncpg.exceptions.CharacterNotInRepertoireError:
        return json_response({"detail": "text must not contain a NUL character"}, 422)
    except asyncpg.exceptions.DataError as exc:
        return json_response({"detail": f"invalid value: {exc.__class__.__name__}"}, 422)
    except DB_UNAVAILABLE:
        log.warning("database unavailable for %s %s", request.method, request.path)
        return json_response(
            {"detail": "the database is unavailable, try again shortly"},
            503,
            headers={"Retry-After": "5"},
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response({"detail": "internal server error"}, 500)


def _passthrough(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After", "WWW-Authenticate", "Location")
    return {k: exc.headers[k] for k in keep if k in exc.headers}
