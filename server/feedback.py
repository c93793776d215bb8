"""REST views for visitors' feedback on replies: thumbs up or down, with a comment."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server import keys
from server.auth.guards import current_user
from server.db import queries
from server.http import BIGINT_MAX, APIError, check_fields, json_response, read_json

routes = web.RouteTableDef()

PATH = "/api/v1/chat/feedback/{reply_id:[0-9]+}"
RATINGS = ("up", "down")
MAX_COMMENT_CHARS = 1000
NOT_YOURS = "no reply of yours has this id"


def _reply_id(request: web.Request) -> int:
    """The path's reply id; one too large to be any row's is nobody's reply (404)."""
    reply_id = int(request.match_info["reply_id"])
    if reply_id > BIGINT_MAX:
        raise APIError(404, NOT_YOURS)
    return reply_id


def parse_feedback(data: Any) -> tuple[str, str | None]:
    """(rating, comment) from `{"rating":"up"|"down","comment"?}`, or a 422 saying why not."""
    fields = check_fields(data, {"rating": str}, {"comment": str})
    rating, comment = fields["rating"], fields.get("comment")
    if rating not in RATINGS:
        raise APIError(422, "rating: must be 'up' or 'down'")
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise APIError(422, f"comment: must be at most {MAX_COMMENT_CHARS} characters")
    return rating, comment


@routes.put(PATH)
async def put_feedback(request: web.Request) -> web.Response:
    user = await current_user(request)
    reply_id = _reply_id(request)
    rating, comment = parse_feedback(await read_json(request))
    row = await queries.set_feedback(request.app[keys.POOL], user["id"], reply_id, rating, comment)
    if row is None:
        raise APIError(404, NOT_YOURS)
    return json_response(dict(row))


@routes.delete(PATH)
async def delete_feedback(request: web.Request) -> web.Response:
    user = await current_user(request)
    reply_id = _reply_id(request)
    if not await queries.delete_feedback(request.app[keys.POOL], user["id"], reply_id):
        raise APIError(404, NOT_YOURS)
    return json_response({"reply_id": reply_id, "rating": None, "comment": None})
