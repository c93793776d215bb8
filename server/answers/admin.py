"""The admin REST API for the knowledge base: list, read, add, replace, delete documents.

Only admins may call it (``server.auth.guards.require_admin``: a verified user whose
email is in ``ADMIN_EMAILS``; 403 otherwise, 401 without a valid token).

A change commits with its NOTIFY (``store``); the view then waits for this
instance's index to include it, so the very next question here sees it, while
the other instances pick it up from the notice a moment later.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web

from server import keys
from server.answers import store
from server.answers.knowledge import Document
from server.auth import guards
from server.db import operators as operators_sql
from server.http import APIError, check_fields, json_response, read_json

routes = web.RouteTableDef()

BASE = "/api/v1/admin/documents"
MAX_ID_CHARS = 200
MAX_TOPIC_CHARS = 200
MAX_CONTENT_CHARS = 100_000
# A document may be larger than a chat request (MAX_BODY_BYTES): 100,000 characters
# of content in JSON take up to about 600 kB when every one is escaped.
MAX_BODY_BYTES = 1024 * 1024


# --- validation (pure) -----------------------------------------------------------------


def check_id(doc_id: str) -> str:
    """A document id as the API accepts it, or a 422 saying why not."""
    if not 1 <= len(doc_id) <= MAX_ID_CHARS:
        raise APIError(422, f"id: must be 1 to {MAX_ID_CHARS} characters")
    if doc_id != doc_id.strip():
        raise APIError(422, "id: must not start or end with white space")
    if "#" in doc_id:
        raise APIError(422, "id: must not contain '#' (it marks passages of a document)")
    if "\x00" in doc_id:
        raise APIError(422, "id: must not contain a NUL character")
    return doc_id


def parse_document(data: Any, doc_id: str | None) -> Document:
    """A document from a request body ``{"topic","content"}`` (plus ``"id"`` when
    ``doc_id`` is None; a new id is made when it is missing there too).

    Topic and content are stripped of surrounding white space, as in a knowledge file.
    """
    fields = check_fields(data, {"topic": str, "content": str}, {"id": str})
    if doc_id is None:
        doc_id = check_id(fields["id"]) if "id" in fields else uuid.uuid4().hex
    elif "id" in fields and fields["id"] != doc_id:
        raise APIError(422, "id: must be the id in the path (or left out)")
    # The bounds hold for the text as sent; then it must not be blank once stripped.
    topic, content = fields["topic"], fields["content"]
    if not 1 <= len(topic) <= MAX_TOPIC_CHARS or not topic.strip():
        raise APIError(422, f"topic: must be 1 to {MAX_TOPIC_CHARS} characters, not all blank")
    if not 1 <= len(content) <= MAX_CONTENT_CHARS or not content.strip():
        raise APIError(422, f"content: must be 1 to {MAX_CONTENT_CHARS} characters, not all blank")
    return Document(doc_id, topic.strip(), content.strip())


def document_body(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "topic": row["topic"],
        "content": row["content"],
        "updated_at": row["updated_at"],
    }


# --- views -----------------------------------------------------------------------------


async def require_admin(request: web.Request) -> tuple[Any, store.LiveKnowledge]:
    """The admin and the knowledge base (`guards.require_admin`)."""
    return await guards.require_admin(request), request.app[keys.KNOWLEDGE]


async def _read_body(request: web.Request) -> Any:
    return await read_json(request.clone(client_max_size=MAX_BODY_BYTES))


async def _applied(admin: Any, live: store.LiveKnowledge, action: str, doc_id: str) -> None:
    """Log the change in the audit log, then wait until this instance's index includes it."""
    await operators_sql.record(live.pool, admin, action, doc_id)
    await asyncio.shield(live.refresh())


def _no_document(doc_id: str) -> APIError:
    return APIError(404, f"no document with id {doc_id!r}")


@routes.get(BASE)
async def list_documents(request: web.Request) -> web.Response:
    _admin, live = await require_admin(request)
    rows = await store.list_documents(live.pool, live.collection)
    return json_response([document_body(r) for r in rows])


@routes.get(BASE + "/{id:.+}")
async def get_document(request: web.Request) -> web.Response:
    _admin, live = await require_admin(request)
    doc_id = request.match_info["id"]
    row = await store.get_document(live.pool, live.collection, doc_id)
    if row is None:
        raise _no_document(doc_id)
    return json_response(document_body(row))


@routes.post(BASE)
async def add_document(request: web.Request) -> web.Response:
    admin, live = await require_admin(request)
    doc = parse_document(await _read_body(request), None)
    added = await store.add_document(live.pool, live.collection, doc)
    if added is None:
        raise APIError(409, f"a document with id {doc.id!r} exists; PUT replaces it")
    await _applied(admin, live, "document added", doc.id)
    return json_response(
        document_body(added[0]), 201, headers={"Location": f"{BASE}/{quote(doc.id, safe='')}"}
    )


@routes.put(BASE + "/{id:.+}")
async def put_document(request: web.Request) -> web.Response:
    admin, live = await require_admin(request)
    doc_id = check_id(request.match_info["id"])
    doc = parse_document(await _read_body(request), doc_id)
    row, _added, _version = await store.put_document(live.pool, live.collection, doc)
    await _applied(admin, live, "document replaced", doc.id)
    return json_response(document_body(row))


@routes.delete(BASE + "/{id:.+}")
async def delete_document(request: web.Request) -> web.Response:
    admin, live = await require_admin(request)
    doc_id = request.match_info["id"]
    if await store.delete_document(live.pool, live.collection, doc_id) is None:
        raise _no_document(doc_id)
    await _applied(admin, live, "document deleted", doc_id)
    return json_response({"deleted": doc_id})


# --- the OpenAPI description, merged into the server's document by server/docs.py --------


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI 3 path items of the admin API (they use ``#/components/schemas/Error``)."""
    string = {"type": "string"}
    document = {
        "type": "object",
        "required": ["id", "topic", "content", "updated_at"],
        "properties": {
            "id": string,
            "topic": string,
            "content": string,
            "updated_at": {"type": "string", "format": "date-time"},
        },
    }
    # The server strips BLANK around topic and content and refuses them blank; an id may
    # not start or end with BLANK nor hold '#'; no NUL anywhere. The patterns say the same.
    blank = (  # what str.isspace() calls space
        "\\t\\n\\v\\f\\r\\u001c-\\u001f\\u0020\\u0085\\u00a0\\u1680"
        "\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    )
    visible = f"[^\\u0000{blank}]"
    fields = {
        "topic": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TOPIC_CHARS,
            "pattern": f"^[^\\u0000]*{visible}[^\\u0000]*$",
        },
        "content": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CONTENT_CHARS,
            "pattern": f"^[^\\u0000]*{visible}[^\\u0000]*$",
        },
    }
    no_hash = f"[^#\\u0000{blank}]"
    id_schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_CHARS,
        "pattern": f"^{no_hash}([^#\\u0000]*{no_hash})?$",
    }
    new_document = {
        "type": "object",
        "required": ["topic", "content"],
        "properties": {
            "id": {
                **id_schema,
                "nullable": True,
                "description": "optional: a new id is made when left out (or null)",
            },
            **fields,
        },
    }
    replacement = {"type": "object", "required": ["topic", "content"], "properties": fields}

    def answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    error_texts = {
        400: "Malformed JSON",
        401: "Missing, malformed, tampered or expired token",
        403: "Not an administrator (ADMIN_EMAILS, verified email)",
        404: "No document with this id",
        409: "A document with this id exists",
        413: "Request body too large",
        415: "Wrong content type",
        422: "Validation error",
    }

    def errors(*codes: int) -> dict[str, Any]:
        error = {"$ref": "#/components/schemas/Error"}
        return {str(c): answer(error, error_texts[c]) for c in codes}

    def op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "summary": summary,
            "tags": ["admin"],
            "security": [{"bearer": []}],
            "responses": responses,
            **extra,
        }

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    id_param = {"name": "id", "in": "path", "required": True, "schema": id_schema}
    applied = "; this instance answers from the change once this returns"
    return {
        BASE: {
            "get": op(
                "All knowledge-base documents, in order",
                {
                    "200": answer({"type": "array", "items": document}, "The documents"),
                    **errors(401, 403),
                },
            ),
            "post": op(
                "Add a document at the end" + applied,
                {
                    "201": answer(document, "Added"),
                    **errors(400, 401, 403, 409, 413, 415, 422),
                },
                requestBody=body(new_document),
            ),
        },
        BASE + "/{id}": {
            "get": op(
                "One document",
                {"200": answer(document, "The document"), **errors(401, 403, 404)},
                parameters=[id_param],
            ),
            "put": op(
                "Replace a document (it keeps its place) or add it" + applied,
                {
                    "200": answer(document, "Replaced or added"),
                    **errors(400, 401, 403, 413, 415, 422),
                },
                parameters=[id_param],
                requestBody=body(replacement),
            ),
            "delete": op(
                "Delete a document" + applied,
                {
                    "200": answer(
                        {
                            "type": "object",
                            "required": ["deleted"],
                            "properties": {"deleted": string},
                        },
                        "Deleted: the id",
                    ),
                    **errors(401, 403, 404),
                },
                parameters=[id_param],
            ),
        },
    }
