"""The operators' JSON endpoints: figures of the last day, unanswered questions, feedback,
what the retriever finds, and the audit log. Admins only (`guards.require_admin`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from protocol import MAX_TEXT_CHARS
from server import keys
from server.auth.emails import EmailError, email_key
from server.auth.guards import require_admin
from server.db import operators as sql
from server.db import queries
from server.feedback import RATINGS
from server.http import BIGINT_MAX, APIError, check_fields, json_response, query_int, read_json

routes = web.RouteTableDef()

LIST_DEFAULT, LIST_MAX = 50, 100
MAX_PASSAGES = 10
MAX_MESSAGES = 2000  # a conversation read by an admin: its newest messages, at most


def _limit(request: web.Request) -> int:
    return query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)


@routes.get("/api/v1/admin/stats")
async def stats(request: web.Request) -> web.Response:
    await require_admin(request)
    app = request.app
    row = await sql.figures_24h(app[keys.POOL])
    return json_response(
        {
            "connections": len(app[keys.CONNECTIONS]),
            "users": row["users"],
            "guests": row["guests"],
            "messages_24h": row["messages"],
            "unanswered_24h": row["unanswered"],
            "feedback_24h": {"up": row["up"], "down": row["down"]},
            "first_token_ms": app[keys.METRICS].first_token_ms(),
        }
    )


@routes.get("/api/v1/admin/unanswered")
async def unanswered(request: web.Request) -> web.Response:
    await require_admin(request)
    days = query_int(request, "days", 7, 1, 3650)
    rows = await sql.unanswered(request.app[keys.POOL], days, _limit(request))
    return json_response(
        [
            {
                "question": r["question"],
                "count": r["count"],
                "last_asked": r["last_asked"],
                "conversation_id": r["conversation_id"],  # the newest asking's
            }
            for r in rows
        ]
    )


@routes.get("/api/v1/admin/feedback")
async def feedback(request: web.Request) -> web.Response:
    await require_admin(request)
    rating = request.query.get("rating")
    if rating is not None and rating not in RATINGS:
        raise APIError(422, "rating: must be 'up' or 'down'")
    before = query_int(request, "before", None, 1, BIGINT_MAX)
    rows = await sql.feedback(request.app[keys.POOL], rating, _limit(request), before)
    return json_response([_feedback_item(r) for r in rows])


def _feedback_item(row: Any) -> dict[str, Any]:
    return {
        "reply_id": row["reply_id"],
        "rating": row["rating"],
        "comment": row["comment"],
        "question": row["question"],
        "reply": row["reply"],
        "sources": row["sources"] or [],
        "user": _user(row),
        "at": row["at"],
    }


def _user(row: Any) -> dict[str, Any]:
    return {"id": row["user_id"], "email": row["email"], "is_guest": row["is_guest"]}


@routes.get("/api/v1/admin/conversations")
async def conversations(request: web.Request) -> web.Response:
    """Every user's conversations, most recently active first; `?q=` text in one of their
    messages, `?user=` the exact email (case ignored), `?before=<id>` the page after it."""
    await require_admin(request)
    q = request.query.get("q") or None
    if q is not None and (len(q) > MAX_TEXT_CHARS or "\x00" in q):
        raise APIError(422, f"q: must be at most {MAX_TEXT_CHARS} characters, no NUL")
    user = request.query.get("user")  # present but empty is no address: 422
    try:
        user_key = email_key(user) if user is not None else None
    except EmailError as exc:
        raise APIError(422, f"user: {exc}") from None
    before = query_int(request, "before", None, 1, BIGINT_MAX)
    rows = await sql.conversations(request.app[keys.POOL], q, user_key, _limit(request), before)
    return json_response(
        [
            {
                "id": r["id"],
                "title": r["title"],
                "user": _user(r),
                "updated_at": r["updated_at"],
                "messages": r["messages"],
                "down_votes": r["down_votes"],
            }
            for r in rows
        ]
    )


@routes.get("/api/v1/admin/conversations/{id:[0-9]+}")
async def conversation(request: web.Request) -> web.Response:
    """One conversation with every message (replies with sources and feedback), oldest
    first; the read goes into the audit log."""
    admin = await require_admin(request)
    conversation_id = int(request.match_info["id"])
    pool = request.app[keys.POOL]
    row = await sql.conversation(pool, conversation_id) if conversation_id <= BIGINT_MAX else None
    if row is None:
        raise APIError(404, "no conversation has this id")
    rows = await queries.history(pool, row["user_id"], MAX_MESSAGES, None, conversation_id)
    await sql.record(pool, admin, "conversation read", str(conversation_id))
    return json_response(
        {
            "id": row["id"],
            "title": row["title"],
            "user": _user(row),
            "messages": [queries.history_item(r) for r in rows],
        }
    )


@routes.post("/api/v1/admin/retrieve")
async def retrieve(request: web.Request) -> web.Response:
    """What the retriever finds for a question, best first; nothing is stored."""
    await require_admin(request)
    question = check_fields(await read_json(request), {"question": str})["question"]
    if not 1 <= len(question) <= MAX_TEXT_CHARS:
        raise APIError(422, f"question: must be 1 to {MAX_TEXT_CHARS} characters")
    hits = request.app[keys.PIPELINE].retrieve(question)[:MAX_PASSAGES]
    passages = [
        {
            "id": hit.passage.id,
            "topic": hit.passage.topic,
            "score": round(hit.score, 4),
            "content": hit.passage.text,
        }
        for hit in hits
    ]
    return json_response({"passages": passages})


@routes.get("/api/v1/admin/audit")
async def audit(request: web.Request) -> web.Response:
    await require_admin(request)
    rows = await sql.audit(request.app[keys.POOL], _limit(request))
    return json_response(
        [
            {"at": r["at"], "admin": r["admin_email"], "action": r["action"], "target": r["target"]}
            for r in rows
        ]
    )
