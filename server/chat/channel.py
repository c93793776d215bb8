"""The WebSocket chat channel: `GET /api/v1/chat/ws`, up to an authenticated session.

The life of a connection:
1. handshake: Origin checked (403), a header token checked (401);
2. no header token: the first frame must be `auth`, within 10 s (4408); until it
   comes the socket counts against WS_PENDING_AUTH_PER_ADDRESS and
   WS_PENDING_AUTH_MAX (beyond them the handshake is refused with 429);
3. `ready`, then frames (`server.chat.session`): `message` is stored (group
   commit), acked, and its reply started; `cancel`, `resume` and `ping` are
   answered at once;
4. shortly before the token expires: `error token_expired`, then 4401
   unless a fresh `auth` came;
5. shutdown: replies are stored first, then every socket gets 1001.

The connection's outgoing side is `server.chat.connection`; the replies are
the `ReplyManager`'s (`server.chat.replies`).
"""

from __future__ import annotations

from aiohttp import WSMsgType, web

from protocol import MAX_FRAME_BYTES, Auth, CloseCode, ErrorCode, ProtocolError, decode
from server import keys
from server.auth.guards import UNAUTHORIZED, bearer_token
from server.auth.tokens import Claims, TokenError
from server.chat.session import Session, refuse
from server.forwarded import client_address
from server.http import APIError


def origin_allowed(request: web.Request, origin: str) -> bool:
    """No Origin (not a browser), the server's own origin, or one on the allow-list."""
    allowed = request.app[keys.SETTINGS].allowed_origins
    if "*" in allowed:
        return True
    # The own origin comes from settings, never from the Host header, which the client
    # writes (a rebound DNS name would otherwise be "own").
    origin = origin.rstrip("/")
    return origin in allowed or origin == request.app[keys.SETTINGS].own_origin


async def chat_ws(request: web.Request) -> web.StreamResponse:
    app = request.app
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(request, origin):
        raise APIError(403, "origin not allowed")
    if app[keys.SHUTDOWN].is_set():
        raise APIError(503, "the server is shutting down", {"Retry-After": "5"})
    claims = None
    if "Authorization" in request.headers:
        try:
            claims = app[keys.TOKENS].verify(bearer_token(request))
        except TokenError as exc:
            raise APIError(401, str(exc), UNAUTHORIZED) from None

    ws = web.WebSocketResponse(
        autoping=False,
        max_msg_size=MAX_FRAME_BYTES + 1,  # aiohttp refuses sizes >= the limit; 64 KiB is allowed
        compress=False,
        decode_text=False,
    )
    if claims is None:
        # Until its `auth` frame the socket proves nothing: bounded (server.chat.pending_auth).
        pending, address = app[keys.PENDING_AUTH], client_address(request)
        if not pending.admit(address):
            retry = str(max(1, round(app[keys.SETTINGS].ws_auth_timeout_s)))
            raise APIError(
                429, "too many connections waiting to authenticate", {"Retry-After": retry}
            )
        try:
            await ws.prepare(request)
            claims = await _first_frame_auth(app, ws)
        finally:
            pending.release(address)
        if claims is None:
            return ws
    else:
        await ws.prepare(request)
    await Session(app, ws, claims, request.transport).run()
    return ws


async def _first_frame_auth(app: web.Application, ws: web.WebSocketResponse) -> Claims | None:
    try:
        msg = await ws.receive(timeout=app[keys.SETTINGS].ws_auth_timeout_s)
    except TimeoutError:
        await ws.close(code=CloseCode.AUTH_TIMEOUT, message=b"no authentication in time")
        return None
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None
    try:
        frame = decode(msg.data) if msg.type == WSMsgType.TEXT else None
    except ProtocolError:
        frame = None
    if not isinstance(frame, Auth):
        await refuse(ws, ErrorCode.UNAUTHORIZED, "authenticate first", CloseCode.AUTH_FAILED)
        return None
    try:
        return app[keys.TOKENS].verify(frame.token)
    except TokenError as exc:
        code = ErrorCode.TOKEN_EXPIRED if exc.expired else ErrorCode.UNAUTHORIZED
        await refuse(ws, code, str(exc), CloseCode.AUTH_FAILED)
        return None
