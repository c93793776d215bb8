"""REST views for conversations: list, create, rename, delete.

Every change is told to the user's connections on every instance (the
`conversation` frame), so the other tabs' lists follow.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from protocol import ConversationChange
from server import keys
from server.auth.guards import current_user
from server.db import conversations
from server.http import (
    BIGINT_MAX,
    APIError,
    check_fields,
    json_response,
    query_int,
    read_json,
)

routes = web.RouteTableDef()

LIST_DEFAULT = 20
LIST_MAX = 100
MAX_TITLE_CHARS = 200
NOT_FOUND = "no conversation with this id"


def conversation_item(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "messages": row["messages"],
    }


def _title(data: dict[str, Any]) -> str | None:
    title = data.get("title")
    if title is not None and not 1 <= len(title) <= MAX_TITLE_CHARS:
        raise APIError(422, f"title: must be 1 to {MAX_TITLE_CHARS} characters")
    return title


def conversation_id_in_path(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= BIGINT_MAX:
        raise APIError(404, NOT_FOUND)  # no conversation has such an id
    return int(raw)


@routes.get("/api/v1/chat/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    user = await current_user(request)
    limit = query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)
    before = query_int(request, "before", None, 1, BIGINT_MAX)
    rows = await conversations.list_conversations(request.app[keys.POOL], user["id"], limit, before)
    if rows is None:
        raise APIError(404, f"before: {NOT_FOUND}")
    return json_response([conversation_item(r) for r in rows])


@routes.post("/api/v1/chat/conversations")
async def create_conversation(request: web.Request) -> web.Response:
    user = await current_user(request)
    body = await read_json(request) if request.can_read_body else {}
    title = _title(check_fields(body, {}, {"title": str}))
    row = await conversations.create(request.app[keys.POOL], user["id"], title)
    request.app[keys.REPLIES].conversation_changed(
        user["id"], ConversationChange.CREATED, row["id"], row["title"]
    )
    return json_response(conversation_item(row), 201)


@routes.patch("/api/v1/chat/conversations/{id}")
async def rename_conversation(request: web.Request) -> web.Response:
    user = await current_user(request)
    conversation_id = conversation_id_in_path(request)
    title = _title(check_fields(await read_json(request), {"title": str}))
    assert title is not None
    row = await conversations.rename(request.app[keys.POOL], user["id"], conversation_id, title)
    if row is None:
        raise APIError(404, NOT_FOUND)
    request.app[keys.REPLIES].conversation_changed(
        user["id"], ConversationChange.RENAMED, row["id"], row["title"]
    )
    return json_response(conversation_item(row))


@routes.delete("/api/v1/chat/conversations/{id}")
async def delete_conversation(request: web.Request) -> web.Response:
    user = await current_user(request)
    conversation_id = conversation_id_in_path(request)
    deleted = await conversations.delete(request.app[keys.POOL], user["id"], conversation_id)
    if deleted is None:
        raise APIError(404, NOT_FOUND)
    request.app[keys.REPLIES].conversation_changed(
        user["id"], ConversationChange.DELETED, conversation_id, None
    )
    return json_response({"deleted": deleted})
