"""Prometheus metrics: what operators scrape at `GET /metrics`.

Each app owns a `Metrics` with a registry of its own, so several apps in one
process (the tests) count apart. With WORKERS above 1 the supervisor gives every
worker one `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode):
each worker writes its figures there and a scrape on any worker reads them all,
so one scrape covers the whole instance. Labels are bounded: routes are the
router's templates (`/api/v1/admin/documents/{id}`), never raw paths.
"""

from __future__ import annotations

import hmac
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from server import keys
from server.http import APIError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"  # the route label of a request no route took (a 404, a 405)
# Replies of a chat server: from a few milliseconds (the mock) to a slow provider.
RECENT_S = 24 * 3600  # the operators' window
RECENT_MAX = 1_000_000  # first-token figures kept at most (a day at 11 replies a second)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The server's metrics, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        r = self.registry
        self.connections = Gauge(
            "chat_connections",
            "Open, authenticated WebSocket connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.messages = Counter(
            "chat_messages_total", "User messages stored (resends not counted)", registry=r
        )
        self.replies = Counter(
            "chat_replies_total", "Replies ended, by finish reason", ["finish_reason"], registry=r
        )
        self.first_token = Histogram(
            "chat_first_token_seconds",
            "From a message's commit to its reply's first token",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "http_requests_total",
            "REST requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "REST request handling time, by method and route template",
            ["method", "route"],
            registry=r,
        )

        self.llm_errors = Counter(
            "llm_errors_total", "Replies the language model failed (upstream_error)", registry=r
        )
        self.fanout_connected = Gauge(
            "chat_fanout_connected",
            "1 while the fan-out between instances (Redis, or PostgreSQL LISTEN) is connected;"
            " 0 while it is degraded (with workers: 0 if any worker's is)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.purge_deleted = Counter(
            "purge_deleted_rows_total", "chat_history rows deleted by the purge", registry=r
        )

        # This instance's first-token latencies of the last day, for the operators' p50/p99.
        self._recent_first_tokens: deque[tuple[float, float]] = deque(maxlen=RECENT_MAX)

    def first_token_seen(self, seconds: float) -> None:
        self.first_token.observe(seconds)
        self._recent_first_tokens.append((time.monotonic(), seconds))

    def first_token_ms(self) -> dict[str, float] | None:
        """{"p50","p99"} in milliseconds over this instance's replies of the last 24 h
        (nearest rank), or None without any."""
        horizon = time.monotonic() - RECENT_S
        recent = self._recent_first_tokens
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if not recent:
            return None
        ordered = sorted(seconds for _, seconds in recent)

        def rank(q: float) -> float:
            return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)

        return {"p50": rank(0.50), "p99": rank(0.99)}

    def exposition(self) -> bytes:
        """The text format: this app's registry, or every worker's in multiprocess mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def metrics_middleware(metrics: Metrics):
    """Count and time every HTTP request but the WebSocket's long life and /metrics itself."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_label(request)
            if not (status == 101 or route == "/metrics"):
                method = request.method
                metrics.http_requests.labels(method, route, str(status)).inc()
                metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)

    return middleware


async def metrics_view(request: web.Request) -> web.Response:
    """`GET /metrics`; with METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    token = request.app[keys.SETTINGS].metrics_token
    if token is not None:
        sent = request.headers.get("Authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise APIError(401, "a valid METRICS_TOKEN is required", {"WWW-Authenticate": "Bearer"})
    body = request.app[keys.METRICS].exposition()
    return web.Response(
        body=body,
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
    )


def setup(app: web.Application, metrics: Metrics) -> None:
    app[keys.METRICS] = metrics
    app.router.add_get("/metrics", metrics_view)
