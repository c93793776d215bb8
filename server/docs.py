"""The OpenAPI 3 document, and Swagger UI and ReDoc served from installed assets.

The UI assets come from the `aiohttp-swagger3` package's bundled copies of
Swagger UI and ReDoc, so the docs work with no outside network. Two things keep it so:

- ReDoc's side menu ends with an "API docs by Redocly" badge whose logo is an
  `<img>` from `cdn.redoc.ly`, and no ReDoc option turns it off (the footer is not
  configurable; only `hideSidebar` drops it, with the whole menu). The bundle is
  served with that one address pointing at the same logo among the installed assets.
- Both pages carry a Content-Security-Policy that allows this origin only, so no
  other fetch can leave the browser from them whatever the bundles do.
"""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from typing import Any

import aiohttp_swagger3
from aiohttp import web

from server import keys
from server.answers import admin
from server.http import BIGINT_MAX, json_response

ASSETS = Path(aiohttp_swagger3.__file__).parent


def _obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (bad JSON, bad link)",
        401: "Missing, malformed, tampered or expired token",
        403: "Forbidden",
        404: "Not found (or not the caller's)",
        409: "Conflict",
        413: "Request body too large",
        415: "Wrong content type",
        422: "Validation error",
        429: "Rate limited (see Retry-After)",
        502: "The language model failed",
        503: "The database is unavailable (see Retry-After)",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


STR = {"type": "string"}
# Request text: the server refuses a NUL character anywhere (422), so the schema says so.
NO_NUL = "^[^\\u0000]*$"
TEXT = {"type": "string", "pattern": NO_NUL}
INT = {"type": "integer"}
INT64 = {"type": "integer", "format": "int64", "maximum": BIGINT_MAX}
BOOL = {"type": "boolean"}
TS = {"type": "string", "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["detail"],
        detail={"description": "Human-readable message", "oneOf": [STR, {"type": "array"}]},
    ),
    "Credentials": _obj(
        ["email", "password"],
        email={"type": "string", "format": "email", "pattern": NO_NUL},
        password={**TEXT, "minLength": 8, "description": "8 to 72 UTF-8 bytes"},
    ),
    "LoginForm": _obj(["username", "password"], username=TEXT, password=TEXT),
    "Token": _obj(
        ["access_token", "token_type", "expires_in"],
        access_token=STR,
        token_type={"type": "string", "enum": ["bearer"]},
        expires_in={"type": "integer", "description": "seconds"},
    ),
    "User": _obj(
        ["id", "email", "is_active", "is_verified", "created_at", "is_guest"],
        id=INT,
        email={"type": "string", "nullable": True, "description": "null for a guest"},
        is_active=BOOL,
        is_verified=BOOL,
        created_at=TS,
        is_guest=BOOL,
    ),
    "GuestToken": _obj(
        ["access_token", "token_type", "expires_in", "user"],
        access_token=STR,
        token_type={"type": "string", "enum": ["bearer"]},
        expires_in={"type": "integer", "description": "seconds"},
        user=_obj(["id", "is_guest"], id=INT, is_guest={"type": "boolean", "enum": [True]}),
    ),
    "HostIdentity": _obj(
        ["token"],
        token={
            **TEXT,
            "description": "a JWT the host site signs with IDENTITY_SECRET (HS256): sub "
            "(1-200 characters), exp (at most 24 h ahead), optional email and name",
        },
    ),
    "SignupResult": {
        "allOf": [
            _ref("User"),
            _obj(
                None,
                access_token=STR,
                token_type=STR,
                expires_in=INT,
            ),
        ],
        "description": "The user; plus a login body unless REQUIRE_VERIFIED_EMAIL is on.",
    },
    "Source": _obj(
        ["id", "topic", "score"],
        id={"type": "string", "description": "document id, with #n for a passage"},
        topic=STR,
        score={"type": "number"},
    ),
    "ChatRequest": _obj(
        ["message"],
        message={**TEXT, "minLength": 1, "maxLength": 4000},
        id={
            **TEXT,
            "minLength": 1,
            "maxLength": 64,
            "nullable": True,
            "description": "the client's id for this message; a resend is idempotent (null: none)",
        },
        conversation_id={
            **INT64,
            "nullable": True,
            "description": "the conversation (404 if not the caller's); absent or null: the "
            "caller's most recently active one, made when there is none",
        },
    ),
    "ChatResponse": _obj(
        ["response", "sources", "message_id", "reply_id"],
        response=STR,
        sources={"type": "array", "items": _ref("Source"), "maxItems": 5},
        message_id=INT,
        reply_id=INT,
        id={"type": "string", "description": "the client id of the message"},
        finish_reason={"type": "string", "enum": ["stop", "cancelled", "error"]},
        conversation_id={**INT, "description": "the conversation the messages are in"},
    ),
    "HistoryItem": _obj(
        ["id", "message", "is_user_message", "timestamp"],
        id=INT,
        message=STR,
        is_user_message=BOOL,
        timestamp=TS,
        client_id={"type": "string", "description": "user messages: the client's id"},
        reply_to={"type": "integer", "description": "replies: the user message's id"},
        finish_reason={"type": "string", "description": "replies: stop, cancelled or error"},
        sources={"type": "array", "items": _ref("Source")},
        feedback={
            "type": "string",
            "enum": ["up", "down"],
            "nullable": True,
            "description": "replies: the caller's rating, or null",
        },
        conversation_id={**INT, "nullable": True, "description": "the message's conversation"},
    ),
    "FeedbackRequest": _obj(
        ["rating"],
        rating={"type": "string", "enum": ["up", "down"]},
        comment={**TEXT, "maxLength": 1000, "nullable": True},
    ),
    "Feedback": _obj(
        ["reply_id", "rating", "comment"],
        reply_id=INT,
        rating={"type": "string", "enum": ["up", "down"], "nullable": True},
        comment={"type": "string", "nullable": True},
    ),
    "Deleted": _obj(["deleted"], deleted=INT),
    "Conversation": _obj(
        ["id", "title", "created_at", "updated_at", "messages"],
        id=INT,
        title={
            "type": "string",
            "nullable": True,
            "description": "null until the first message when made without one",
        },
        created_at=TS,
        updated_at={**TS, "description": "its last message's time, else its creation"},
        messages={"type": "integer", "description": "questions and replies in it"},
    ),
    "NewConversation": _obj(
        None,
        title={
            **TEXT,
            "minLength": 1,
            "maxLength": 200,
            "nullable": True,
            "description": "absent or null: the first message's first 60 characters",
        },
    ),
    "ConversationTitle": _obj(["title"], title={**TEXT, "minLength": 1, "maxLength": 200}),
    "PurgeRun": _obj(
        ["started_at", "finished_at", "status", "deleted", "deleted_other"],
        started_at=TS,
        finished_at=TS,
        duration_s={"type": "number"},
        status={"type": "string", "enum": ["ok", "skipped", "error"]},
        deleted={"type": "integer", "description": "chat_history rows"},
        deleted_other={"type": "integer", "description": "expired verifications, rate windows"},
        error={"type": "string", "nullable": True},
    ),
    "PurgeStatus": _obj(
        ["last_run", "schedule", "retention_days"],
        last_run={
            "allOf": [_ref("PurgeRun")],
            "nullable": True,
            "description": "this instance's newest run (ok, skipped or error)",
        },
        last_ok={
            "allOf": [_ref("PurgeRun")],
            "nullable": True,
            "description": "the newest successful run of any instance or of the command line",
        },
        schedule=STR,
        next_run={**TS, "nullable": True},
        retention_days=INT,
    ),
    "Status": _obj(["status"], status=STR),
    "Readiness": _obj(
        ["status", "fanout"],
        status={"type": "string", "enum": ["ready"]},
        fanout={
            "type": "string",
            "enum": ["ok", "degraded"],
            "description": "degraded: the fan-out between instances (Redis, or PostgreSQL"
            " LISTEN/NOTIFY) is away; this instance still serves its own connections, every"
            " message is still stored, and it catches up once the fan-out is back",
        },
    ),
}

BEARER = [{"bearer": []}]
GUEST_BEARER = (
    "An optional Authorization: Bearer header: an account's token is ignored, an invalid "
    "or expired one is 401."
)


def _op(summary: str, tag: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "tags": [tag], "responses": responses, **extra}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _limit(maximum: int, default: int, name: str = "limit") -> dict[str, Any]:
    """A query parameter: how many items, 1 to `maximum`."""
    schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    return {"name": name, "in": "query", "schema": schema}


def _before(description: str) -> dict[str, Any]:
    """The paging parameter `before`: an id, the items after it in the list's order."""
    return {
        "name": "before",
        "in": "query",
        "description": description,
        "schema": {**INT64, "minimum": 1},
    }


def _operator_paths() -> dict[str, Any]:
    """The operators' endpoints (server/operators.py); admins only."""
    limit = _limit(100, 50)
    count = {"type": "integer", "minimum": 0}
    user = _obj(
        ["id", "email", "is_guest"],
        id=INT,
        email={"type": "string", "nullable": True},
        is_guest=BOOL,
    )
    stats = _obj(
        [
            "connections",
            "users",
            "guests",
            "messages_24h",
            "unanswered_24h",
            "feedback_24h",
            "first_token_ms",
        ],
        connections=count,
        users=count,
        guests=count,
        messages_24h=count,
        unanswered_24h=count,
        feedback_24h=_obj(["up", "down"], up=count, down=count),
        first_token_ms={
            **_obj(["p50", "p99"], p50={"type": "number"}, p99={"type": "number"}),
            "nullable": True,
            "description": "this instance's replies of the last 24 h; null without any",
        },
    )
    unanswered = _obj(
        ["question", "count", "last_asked", "conversation_id"],
        question=STR,
        count=count,
        last_asked=TS,
        conversation_id={"type": "integer", "nullable": True},
    )
    feedback_item = _obj(
        ["reply_id", "rating", "comment", "question", "reply", "sources", "user", "at"],
        reply_id=INT,
        rating={"type": "string", "enum": ["up", "down"]},
        comment={"type": "string", "nullable": True},
        question={"type": "string", "nullable": True},
        reply=STR,
        sources={"type": "array", "items": _ref("Source")},
        user=user,
        at=TS,
    )
    passage = _obj(
        ["id", "topic", "score", "content"],
        id=STR,
        topic=STR,
        score={"type": "number"},
        content=STR,
    )
    audit_item = _obj(
        ["at", "admin", "action", "target"],
        at=TS,
        admin=STR,
        action=STR,
        target={"type": "string", "nullable": True},
    )

    def admin_get(summary: str, schema: dict[str, Any], *params: dict[str, Any]):
        return {
            "get": _op(
                summary,
                "admin",
                {"200": _json(schema, "OK"), **_errors(401, 403, 422)},
                security=BEARER,
                parameters=list(params),
            )
        }

    conversation_item = _obj(
        ["id", "title", "user", "updated_at", "messages", "down_votes"],
        id=INT,
        title={"type": "string", "nullable": True},
        user=user,
        updated_at=TS,
        messages=count,
        down_votes=count,
    )
    conversation = _obj(
        ["id", "title", "user", "messages"],
        id=INT,
        title={"type": "string", "nullable": True},
        user=user,
        messages={"type": "array", "items": _ref("HistoryItem")},
    )
    array = {"type": "array"}
    return {
        "/api/v1/admin/conversations": admin_get(
            "Every user's conversations, most recently active first",
            {**array, "items": conversation_item},
            limit,
            _before("a conversation id: the conversations after it in this order"),
            {
                "name": "q",
                "in": "query",
                "description": "text in one of its messages (case ignored)",
                "schema": {**TEXT, "maxLength": 4000},
            },
            {
                "name": "user",
                "in": "query",
                "description": "the user's exact email (case ignored)",
                "schema": {"type": "string", "format": "email", "pattern": NO_NUL},
            },
        ),
        "/api/v1/admin/conversations/{id}": {
            "get": _op(
                "One conversation with its messages; the read is written to the audit log",
                "admin",
                {
                    "200": _json(conversation, "The conversation"),
                    "404": _json(_ref("Error"), "No such conversation"),
                    **_errors(401, 403),
                },
                security=BEARER,
                parameters=[
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {**INT64, "minimum": 0},
                    }
                ],
            )
        },
        "/api/v1/admin/stats": admin_get("Figures of the last 24 hours", stats),
        "/api/v1/admin/unanswered": admin_get(
            "Questions whose reply had no source, grouped by text, most asked first",
            {**array, "items": unanswered},
            _limit(3650, 7, "days"),
            limit,
        ),
        "/api/v1/admin/feedback": admin_get(
            "Visitors' ratings, newest first",
            {**array, "items": feedback_item},
            {"name": "rating", "in": "query", "schema": {"type": "string", "enum": ["up", "down"]}},
            limit,
            _before("a reply_id: the ratings older than that one's"),
        ),
        "/api/v1/admin/retrieve": {
            "post": _op(
                "What the retriever finds for a question, best first; nothing is stored",
                "admin",
                {
                    "200": _json(_obj(["passages"], passages={**array, "items": passage}), "OK"),
                    **_errors(400, 401, 403, 415, 422),
                },
                security=BEARER,
                requestBody=_body(
                    _obj(["question"], question={**TEXT, "minLength": 1, "maxLength": 4000})
                ),
            )
        },
        "/api/v1/admin/audit": admin_get(
            "What admins did (documents changed, purges run), newest first",
            {**array, "items": audit_item},
            limit,
        ),
    }


def build_openapi(title: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/v1/auth/signup": {
            "post": _op(
                "Create an account; a verification email is sent in the background",
                "auth",
                {
                    "201": _json(_ref("SignupResult"), "Created"),
                    **_errors(400, 401, 409, 415, 422, 429),
                },
                requestBody=_body(_ref("Credentials")),
                description=GUEST_BEARER
                + " With a guest's token, the guest becomes this account: same id, history "
                "kept; the guest's token stops working.",
            )
        },
        "/api/v1/auth/guest": {
            "post": _op(
                "A guest's token: chat before signing up (ALLOW_GUESTS)",
                "auth",
                {"201": _json(_ref("GuestToken"), "A guest"), **_errors(403, 429)},
            )
        },
        "/api/v1/auth/identify": {
            "post": _op(
                "Log in a visitor the host site already knows (IDENTITY_SECRET)",
                "auth",
                {"200": _json(_ref("Token"), "Logged in"), **_errors(400, 401, 415, 422)},
                requestBody=_body(_ref("HostIdentity")),
                description="The user bound to the token's sub, made on first use (no "
                "password, not a guest, not verified); an email claim joins no account. "
                + GUEST_BEARER
                + " With a guest's token, the guest's conversations move to that user.",
            )
        },
        "/api/v1/auth/login": {
            "post": _op(
                "Log in (OAuth2 password form or JSON)",
                "auth",
                {"200": _json(_ref("Token"), "Logged in"), **_errors(400, 401, 415, 422, 429)},
                description=GUEST_BEARER
                + " With a guest's token, the guest's conversations move into the account "
                "and the guest is removed.",
                requestBody={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": _ref("LoginForm")},
                        "application/json": {"schema": _ref("Credentials")},
                    },
                },
            )
        },
        "/api/v1/auth/verify": {
            "get": _op(
                "Verify an email address from the emailed link; revokes the account's"
                " earlier tokens and password, and answers with a token of the opener's",
                "auth",
                {"200": _json({"type": "object"}, "Verified"), **_errors(400)},
                parameters=[{"name": "token", "in": "query", "required": True, "schema": TEXT}],
            ),
            "post": _op(
                "Verify an email address and choose the password (the emailed page's form);"
                " revokes the account's earlier tokens and password",
                "auth",
                {"200": _json({"type": "object"}, "Verified"), **_errors(400, 415, 422)},
                requestBody=_body(
                    _obj(["token", "password"], token=TEXT, password={**TEXT, "minLength": 8})
                ),
            ),
        },
        "/api/v1/auth/password": {
            "post": _op(
                "Choose a new password (current_password required when the account has"
                " one); every other token of the account stops working",
                "auth",
                {
                    "200": _json(_ref("Token"), "A fresh token"),
                    **_errors(400, 401, 403, 415, 422, 429),
                },
                requestBody=_body(
                    _obj(["password"], password={**TEXT, "minLength": 8}, current_password=TEXT)
                ),
                security=BEARER,
            )
        },
        "/api/v1/auth/me": {
            "get": _op(
                "The current user",
                "auth",
                {"200": _json(_ref("User"), "The user"), **_errors(401)},
                security=BEARER,
            )
        },
        "/api/v1/auth/refresh": {
            "post": _op(
                "A new token for a still valid one",
                "auth",
                {"200": _json(_ref("Token"), "A fresh token"), **_errors(401)},
                security=BEARER,
            )
        },
        "/api/v1/chat/chat": {
            "post": _op(
                "Ask a question; both messages are stored",
                "chat",
                {
                    "200": _json(_ref("ChatResponse"), "The answer"),
                    **_errors(400, 401, 404, 409, 413, 415, 422, 429, 502, 503),
                },
                security=BEARER,
                requestBody=_body(_ref("ChatRequest")),
            )
        },
        "/api/v1/chat/chat-history": {
            "get": _op(
                "The caller's newest messages, oldest first",
                "chat",
                {
                    "200": _json({"type": "array", "items": _ref("HistoryItem")}, "History"),
                    **_errors(401, 404, 422),
                },
                security=BEARER,
                parameters=[
                    _limit(500, 50),
                    _before("only messages with a smaller id (exclusive)"),
                    {
                        "name": "conversation_id",
                        "in": "query",
                        "description": "only this conversation's messages (404: not the caller's)",
                        "schema": INT64,
                    },
                ],
            ),
            "delete": _op(
                "Delete the caller's whole history",
                "chat",
                {"200": _json(_ref("Deleted"), "Deleted"), **_errors(401)},
                security=BEARER,
            ),
        },
        "/api/v1/chat/feedback/{reply_id}": {
            "parameters": [
                {
                    "name": "reply_id",
                    "in": "path",
                    "required": True,
                    "description": "the reply's message_id (a history item's id)",
                    "schema": {**INT64, "minimum": 0},
                }
            ],
            "put": _op(
                "Rate one of the caller's replies (again: replaced)",
                "chat",
                {
                    "200": _json(_ref("Feedback"), "The rating"),
                    "404": _json(_ref("Error"), "Not one of the caller's replies"),
                    **_errors(400, 401, 415, 422),
                },
                security=BEARER,
                requestBody=_body(_ref("FeedbackRequest")),
            ),
            "delete": _op(
                "Take the rating back (rating and comment become null)",
                "chat",
                {
                    "200": _json(_ref("Feedback"), "No rating any more"),
                    "404": _json(_ref("Error"), "Not one of the caller's replies"),
                    **_errors(401),
                },
                security=BEARER,
            ),
        },
        "/api/v1/chat/conversations": {
            "get": _op(
                "The caller's conversations, most recently active first",
                "conversations",
                {
                    "200": _json({"type": "array", "items": _ref("Conversation")}, "The list"),
                    **_errors(401, 404, 422),
                },
                security=BEARER,
                parameters=[
                    _limit(100, 20),
                    _before(
                        "the conversations after this one in the order "
                        "(404 if it is not the caller's)"
                    ),
                ],
            ),
            "post": _op(
                "Start a conversation",
                "conversations",
                {"201": _json(_ref("Conversation"), "Created"), **_errors(400, 401, 415, 422)},
                security=BEARER,
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("NewConversation")}},
                },
            ),
        },
        "/api/v1/chat/conversations/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": INT64}],
            "patch": _op(
                "Rename a conversation (its activity is unchanged)",
                "conversations",
                {
                    "200": _json(_ref("Conversation"), "Renamed"),
                    **_errors(400, 401, 404, 415, 422),
                },
                security=BEARER,
                requestBody=_body(_ref("ConversationTitle")),
            ),
            "delete": _op(
                "Delete a conversation and its messages",
                "conversations",
                {"200": _json(_ref("Deleted"), "Deleted"), **_errors(401, 404)},
                security=BEARER,
            ),
        },
        "/api/v1/chat/ws": {
            "get": _op(
                "The WebSocket chat channel (protocol 1; see protocol/README.md)",
                "chat",
                {
                    "101": {"description": "Switching protocols"},
                    "400": _json(_ref("Error"), "Not a WebSocket handshake"),
                    "401": {"description": "Bad header token"},
                    "403": {"description": "Origin not allowed"},
                },
            )
        },
        "/api/v1/admin/purge": {
            "get": _op(
                "This instance's last purge run, the schedule and the retention (admins)",
                "admin",
                {"200": _json(_ref("PurgeStatus"), "Status"), **_errors(401, 403)},
                security=BEARER,
            ),
            "post": _op(
                "Run the purge now (admins); skipped if another instance is running it",
                "admin",
                {"200": _json(_ref("PurgeRun"), "The run"), **_errors(401, 403)},
                security=BEARER,
            ),
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (text format); with METRICS_TOKEN set, Bearer that token",
                "ops",
                {
                    "200": {
                        "description": "The metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
            )
        },
        **_operator_paths(),
        "/admin": {
            "get": _op(
                "The operator console, a web page; it shows data only to an admin who logs"
                " in on it (its data comes from the admin endpoints)",
                "admin",
                {
                    "200": {
                        "description": "The console's page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/healthz": {"get": _op("Liveness", "ops", {"200": _json(_ref("Status"), "Alive")})},
        "/readyz": {
            "get": _op(
                "Readiness: the database answers and no shutdown is under way (200 even"
                " while the fan-out is degraded)",
                "ops",
                {"200": _json(_ref("Readiness"), "Ready"), "503": _json(_ref("Status"), "Not")},
            )
        },
    }
    paths.update(admin.openapi_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


SWAGGER_STATIC = "/docs/swagger_ui_static"
REDOC_STATIC = "/redoc/redoc_ui_static"
REDOC_BUNDLE = "redoc.standalone.js"
# ReDoc's badge logo, and the same logo (Redocly's) among the installed assets.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_LOCAL_LOGO = f"{REDOC_STATIC}/favicon-32x32.png".encode()

SWAGGER_INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout"});"""

REDOC_INIT = """Redoc.init("/openapi.json", {}, document.getElementById("redoc"));"""

SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}} – API docs</title>
<link rel="icon" type="image/png" href="{SWAGGER_STATIC}/favicon-32x32.png">
<link rel="stylesheet" href="{SWAGGER_STATIC}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{SWAGGER_STATIC}/swagger-ui-bundle.js"></script>
<script src="{SWAGGER_STATIC}/swagger-ui-standalone-preset.js"></script>
<script>{SWAGGER_INIT}</script></body></html>
"""

REDOC_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}} – API reference</title>
<link rel="icon" type="image/png" href="{REDOC_STATIC}/favicon-32x32.png">
<link rel="stylesheet" href="{REDOC_STATIC}/google-fonts.css"></head>
<body><div id="redoc"></div>
<script src="{REDOC_STATIC}/{REDOC_BUNDLE}"></script>
<script>{REDOC_INIT}</script>
</body></html>
"""


def _script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def docs_csp(inline_script: str, *, redoc: bool = False) -> str:
    """Every fetch goes to this origin only; the page's one inline script runs by its
    hash, no other inline script does. ReDoc also needs inline styles (its bundled
    style-loader and styled-components write <style> elements, some before its `nonce`
    option can take effect; they can fetch nothing from elsewhere either) and a worker
    made from a blob: URL (its search index)."""
    extra = (
        "style-src 'self' 'unsafe-inline'; worker-src blob:; " if redoc else "style-src 'self'; "
    )
    return (
        "default-src 'none'; "
        f"script-src 'self' {_script_hash(inline_script)}; "
        f"{extra}"
        "img-src 'self' data:; "
        "font-src 'self'; "
        "connect-src 'self'; "
        "base-uri 'none'; "
        "form-action 'none'; "
        "frame-ancestors 'self'"
    )


def _page(text: str, csp: str):
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/html", headers=headers)

    return handler


def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle, its badge logo taken from the installed assets."""
    bundle = (ASSETS / "redoc_ui" / REDOC_BUNDLE).read_bytes()
    return bundle.replace(REDOC_CDN_LOGO, REDOC_LOCAL_LOGO)


def setup(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    spec = build_openapi(settings.project_name, settings.project_version)
    title = html.escape(settings.project_name)
    swagger = _page(SWAGGER_PAGE.replace("{title}", title), docs_csp(SWAGGER_INIT))
    redoc = _page(REDOC_PAGE.replace("{title}", title), docs_csp(REDOC_INIT, redoc=True))
    bundle = redoc_bundle()
    bundle_etag = hashlib.sha256(bundle).hexdigest()[:32]

    async def openapi(request: web.Request) -> web.Response:
        return json_response(spec)

    async def redoc_js(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if any(tag.value == bundle_etag for tag in request.if_none_match or ()):
            response = web.Response(status=304, headers=headers)
        else:
            response = web.Response(
                body=bundle, content_type="application/javascript", charset="utf-8", headers=headers
            )
        response.etag = bundle_etag
        return response

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", swagger)
    app.router.add_get("/redoc", redoc)
    # Before the static route of the same directory, so that it wins.
    app.router.add_get(f"{REDOC_STATIC}/{REDOC_BUNDLE}", redoc_js)
    app.router.add_static(SWAGGER_STATIC, ASSETS / "swagger_ui")
    app.router.add_static(REDOC_STATIC, ASSETS / "redoc_ui")
