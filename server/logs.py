"""Logging: plain lines or JSON (LOG_FORMAT), and a request id that ties them together.

Every HTTP request gets an id: the client's `X-Request-ID` when it is a short token,
else a new one. The response carries it back in `X-Request-ID` (errors included, so
a user reporting a failure can quote it), and every log record written while the
request is handled has it as `request_id`.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from pythonjsonlogger.json import JsonFormatter

HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # nothing that could forge a log line
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (or None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(level: str, fmt: str) -> None:
    """The root logger: `fmt` is "text" (one line a record) or "json" (one object a line)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"pid": os.getpid()},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The outermost middleware: the id is set before anything logs and answered on every
    response, error responses included (raised HTTP errors get it on their headers)."""
    sent = request.headers.get(HEADER, "")
    rid = sent if _SAFE_ID.match(sent) else uuid.uuid4().hex
    token = request_id.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[HEADER] = rid
        raise
    finally:
        request_id.reset(token)
    if not response.prepared:
        response.headers[HEADER] = rid
    return response
