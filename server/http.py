"""JSON in and out of REST views: typed body reading and `{"detail"}` errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

JSON = "application/json"
BIGINT_MAX = 2**63 - 1  # the largest id PostgreSQL's bigint holds
_DUMPS_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=_DUMPS_OPTIONS)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None):
    return web.Response(body=dumps(data), status=status, content_type=JSON, headers=headers)


class APIError(web.HTTPException):
    """An HTTP error whose body is `{"detail": ...}`; raise it from any view."""

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None):
        self.status_code = status
        body = dumps({"detail": detail}).decode()
        super().__init__(headers=headers, text=body, content_type=JSON)
        self.detail = detail


def unprocessable(detail: str) -> APIError:
    return APIError(422, detail)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def check_fields(
    data: Any, required: Mapping[str, type], optional: Mapping[str, type] | None = None
) -> dict[str, Any]:
    """The fields of a JSON object with the right types, or a 422 naming the first bad one."""
    if not isinstance(data, dict):
        raise unprocessable("the request body must be a JSON object")
    out: dict[str, Any] = {}
    for name, kind in {**required, **(optional or {})}.items():
        if name not in data or (data[name] is None and name not in required):
            if name in required:
                raise unprocessable(f"{name}: field required")
            continue
        value = data[name]
        # bool is a subclass of int, but `true` is not a number here.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise unprocessable(f"{name}: must be {_type_name(kind)}")
        if isinstance(value, str) and "\x00" in value:
            raise unprocessable(f"{name}: must not contain a NUL character")
        out[name] = value
    return out


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body; 415 for another content type, 400 for malformed JSON."""
    if request.content_type != JSON:
        raise APIError(415, "the request body must be application/json")
    body = await request.read()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"malformed JSON: {exc}") from None


async def read_form_or_json(request: web.Request) -> tuple[str, Mapping[str, Any]]:
    """('form', fields) for an urlencoded/multipart form, ('json', data) for JSON."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form: MultiDictProxy[Any] = await request.post()
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            # aiohttp's parsers: a multipart type with no boundary, a broken part, bad bytes.
            raise APIError(400, f"malformed form body: {exc}") from None
        return "form", {k: v for k, v in form.items() if isinstance(v, str)}
    return "json", await read_json(request)


def query_int(request: web.Request, name: str, default: int | None, lo: int | None, hi: int | None):
    """An integer query parameter (422 if it is not one) within [lo, hi] (None: no bound)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise unprocessable(f"{name}: must be an integer") from None
    if lo is None:
        return value
    if value < lo or (hi is not None and value > hi):
        raise unprocessable(
            f"{name}: must be between {lo} and {hi}" if hi else f"{name}: must be >= {lo}"
        )
    return value
