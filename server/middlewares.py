"""Errors as JSON `{"detail"}`: no HTML error page, no traceback, no 500 for bad input;
and the headers every response carries."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web, web_response

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


def database_unavailable() -> APIError:
    """The one REST answer to "the database is away": 503 with Retry-After."""
    return APIError(503, "the database is unavailable, try again shortly", {"Retry-After": "5"})


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
        raise database_unavailable() from None
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response({"detail": "internal server error"}, 500)


def _passthrough(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After", "WWW-Authenticate", "Location")
    return {k: exc.headers[k] for k in keep if k in exc.headers}


# The Server header names the software, never its version (aiohttp/3.x.y tells an
# attacker which advisories apply).
SERVER_HEADER = "chat-server"


def hide_server_version() -> None:
    """Make SERVER_HEADER the Server header of every response, those too that aiohttp
    writes for a request it cannot parse, before any app hook runs: their default is
    `web_response.SERVER_SOFTWARE`, read when each response is sent."""
    web_response.SERVER_SOFTWARE = SERVER_HEADER


async def response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`Cache-Control: no-store` on every API answer (tokens, the user, history: nothing
    there may sit in a shared or browser cache), unless a view chose otherwise. Not on
    a WebSocket's 101, which no cache keeps: its headers live as long as the socket."""
    if request.path.startswith("/api/") and response.status != 101:
        response.headers.setdefault("Cache-Control", "no-store")
