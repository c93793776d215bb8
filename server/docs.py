"""The OpenAPI 3 document, and Swagger UI and ReDoc served from installed assets.

The UI assets come from the `aiohttp-swagger3` package's bundled copies of
Swagger UI and ReDoc, so the docs work with no outside network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_swagger3
from aiohttp import web

from server import keys
from server.answers import admin
from server.http import json_response

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
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TS = {"type": "string", "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["detail"],
        detail={"description": "Human-readable message", "oneOf": [STR, {"type": "array"}]},
    ),
    "Credentials": _obj(
        ["email", "password"],
        email={"type": "string", "format": "email"},
        password={"type": "string", "minLength": 8, "description": "8 to 72 UTF-8 bytes"},
    ),
    "LoginForm": _obj(["username", "password"], username=STR, password=STR),
    "Token": _obj(
        ["access_token", "token_type", "expires_in"],
        access_token=STR,
        token_type={"type": "string", "enum": ["bearer"]},
        expires_in={"type": "integer", "description": "seconds"},
    ),
    "User": _obj(
        ["id", "email", "is_active", "is_verified", "created_at"],
        id=INT,
        email=STR,
        is_active=BOOL,
        is_verified=BOOL,
        created_at=TS,
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
        message={"type": "string", "minLength": 1, "maxLength": 4000},
        id={
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "the client's id for this message; a resend is idempotent",
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
    ),
    "Deleted": _obj(["deleted"], deleted=INT),
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
        last_run={"allOf": [_ref("PurgeRun")], "nullable": True},
        last_ok={"allOf": [_ref("PurgeRun")], "nullable": True},
        schedule=STR,
        next_run={**TS, "nullable": True},
        retention_days=INT,
    ),
    "Status": _obj(["status"], status=STR),
}

BEARER = [{"bearer": []}]


def _op(summary: str, tag: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "tags": [tag], "responses": responses, **extra}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def build_openapi(title: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/v1/auth/signup": {
            "post": _op(
                "Create an account; a verification email is sent in the background",
                "auth",
                {"201": _json(_ref("SignupResult"), "Created"), **_errors(400, 409, 415, 422)},
                requestBody=_body(_ref("Credentials")),
            )
        },
        "/api/v1/auth/login": {
            "post": _op(
                "Log in (OAuth2 password form or JSON)",
                "auth",
                {"200": _json(_ref("Token"), "Logged in"), **_errors(400, 401, 415, 422, 429)},
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
                "Verify an email address from the emailed link",
                "auth",
                {"200": _json({"type": "object"}, "Verified"), **_errors(400)},
                parameters=[{"name": "token", "in": "query", "required": True, "schema": STR}],
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
                    **_errors(400, 401, 409, 413, 415, 422, 429, 502, 503),
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
                    **_errors(401, 422),
                },
                security=BEARER,
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "description": "only messages with a smaller id (exclusive)",
                        "schema": INT,
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
        "/api/v1/chat/ws": {
            "get": _op(
                "The WebSocket chat channel (protocol 1; see protocol/README.md)",
                "chat",
                {
                    "101": {"description": "Switching protocols"},
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
        "/healthz": {"get": _op("Liveness", "ops", {"200": _json(_ref("Status"), "Alive")})},
        "/readyz": {
            "get": _op(
                "Readiness: the database answers and no shutdown is under way",
                "ops",
                {"200": _json(_ref("Status"), "Ready"), "503": _json(_ref("Status"), "Not")},
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


SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} – API docs</title>
<link rel="stylesheet" href="/docs/swagger_ui_static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger_ui_static/swagger-ui-bundle.js"></script>
<script src="/docs/swagger_ui_static/swagger-ui-standalone-preset.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui",
presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout"}});
</script></body></html>
"""

REDOC_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} – API reference</title>
<link rel="stylesheet" href="/redoc/redoc_ui_static/google-fonts.css"></head>
<body><div id="redoc"></div>
<script src="/redoc/redoc_ui_static/redoc.standalone.js"></script>
<script>Redoc.init("/openapi.json", {{}}, document.getElementById("redoc"));</script>
</body></html>
"""


def setup(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    spec = build_openapi(settings.project_name, settings.project_version)
    swagger = SWAGGER_PAGE.format(title=settings.project_name)
    redoc = REDOC_PAGE.format(title=settings.project_name)

    async def openapi(request: web.Request) -> web.Response:
        return json_response(spec)

    async def swagger_ui(request: web.Request) -> web.Response:
        return web.Response(text=swagger, content_type="text/html")

    async def redoc_ui(request: web.Request) -> web.Response:
        return web.Response(text=redoc, content_type="text/html")

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", swagger_ui)
    app.router.add_get("/redoc", redoc_ui)
    app.router.add_static("/docs/swagger_ui_static", ASSETS / "swagger_ui")
    app.router.add_static("/redoc/redoc_ui_static", ASSETS / "redoc_ui")
