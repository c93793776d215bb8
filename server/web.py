"""REST views for chat: ask over HTTP, read and delete the history."""

from __future__ import annotations

from aiohttp import web

from protocol import MAX_ID_CHARS, MAX_TEXT_CHARS, ErrorCode
from server import keys
from server.auth.guards import current_user
from server.chat.replies import Reply, ShuttingDown, StoredAnswer, new_client_id
from server.chat.store import IdConflict, RateLimited, UnknownConversation
from server.db import conversations, queries
from server.http import (
    BIGINT_MAX,
    APIError,
    check_fields,
    json_response,
    query_int,
    read_json,
)
from server.middlewares import database_unavailable

routes = web.RouteTableDef()

HISTORY_DEFAULT = 50
HISTORY_MAX = 500


def _check_text(message: str, client_id: str | None) -> None:
    if not 1 <= len(message) <= MAX_TEXT_CHARS:
        raise APIError(422, f"message: must be 1 to {MAX_TEXT_CHARS} characters")
    if client_id is not None and not 1 <= len(client_id) <= MAX_ID_CHARS:
        raise APIError(422, f"id: must be 1 to {MAX_ID_CHARS} characters")


@routes.post("/api/v1/chat/chat")
async def chat(request: web.Request) -> web.Response:
    user = await current_user(request)
    data = check_fields(
        await read_json(request), {"message": str}, {"id": str, "conversation_id": int}
    )
    message, client_id = data["message"], data.get("id")
    _check_text(message, client_id)
    conversation_id = data.get("conversation_id")
    client_id = client_id or new_client_id()
    try:
        stored, reply = await request.app[keys.REPLIES].answer(
            user["id"], client_id, message, conversation_id
        )
    except ShuttingDown:
        raise APIError(503, "the server is shutting down", {"Retry-After": "5"}) from None
    except IdConflict:
        raise APIError(409, "this id is stored with another message or conversation") from None
    except UnknownConversation:
        raise APIError(404, "no conversation with this id") from None
    except RateLimited as exc:
        raise APIError(
            429, "too many messages; slow down", {"Retry-After": str(int(exc.retry_after + 0.999))}
        ) from None
    if isinstance(reply, Reply):
        if reply.error_code is ErrorCode.UPSTREAM_ERROR:
            raise APIError(502, f"the language model failed to answer: {reply.error_message}")
        if reply.error_code is ErrorCode.UNAVAILABLE:
            raise database_unavailable()
        answer = StoredAnswer(
            "".join(reply.tokens), reply.sources or [], reply.reply_id, reply.finish_reason
        )
    else:
        answer = reply
    return json_response(
        {
            "response": answer.response,
            "sources": answer.sources,
            "reply_id": answer.reply_id,
            "finish_reason": answer.finish_reason,
            "id": client_id,
            "message_id": stored.message_id,
            "conversation_id": stored.conversation_id,
        }
    )


@routes.get("/api/v1/chat/chat-history")
async def history(request: web.Request) -> web.Response:
    user = await current_user(request)
    limit = query_int(request, "limit", HISTORY_DEFAULT, 1, HISTORY_MAX)
    before = query_int(request, "before", None, 1, BIGINT_MAX)
    conversation_id = query_int(request, "conversation_id", None, None, None)
    pool = request.app[keys.POOL]
    if conversation_id is not None and not await conversations.owned(
        pool, user["id"], conversation_id
    ):
        raise APIError(404, "no conversation with this id")
    rows = await queries.history(pool, user["id"], limit, before, conversation_id)
    return json_response([queries.history_item(r) for r in rows])


@routes.delete("/api/v1/chat/chat-history")
async def delete_history(request: web.Request) -> web.Response:
    user = await current_user(request)
    deleted = await queries.delete_history(request.app[keys.POOL], user["id"])
    return json_response({"deleted": deleted})
