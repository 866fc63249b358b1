"""Prometheus metrics.

Each app gets its own registry (tests build several apps in one process). With
``uvicorn --workers N`` every worker is a separate process: set PROMETHEUS_MULTIPROC_DIR
to an empty directory writable by the backend user (a tmpfs, wiped before start) and
/metrics then sums all workers; without it a scrape sees only the worker that answered it.

RequestMetrics is the ASGI middleware that counts every HTTP request.

Every label value comes from a fixed set or from the configuration (tier and instance
names), never from the request as sent: any method token or path would otherwise create a
new series each.
"""

import os

from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# LLM answers take from tens of milliseconds (cache, short answers) to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})  # any other method is counted as "other"
# A code outside the standard ones is "other"; 499: the client went away before its answer.
STATUSES = frozenset([str(s.value) for s in HTTPStatus] + ["499"])
AUTH_FAILURES = ("missing", "invalid")  # the reason label of mmo_auth_failures


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def status_label(status: int) -> str:
    return str(status) if str(status) in STATUSES else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg = self.registry
        self.http_requests = Counter("mmo_http_requests", "HTTP requests by endpoint and status",
                                     ["method", "endpoint", "status"], registry=reg)
        self.ws_queries = Counter("mmo_ws_queries", "WebSocket queries by outcome (ok, error, disconnected)",
                                  ["outcome"], registry=reg)
        self.query_latency = Histogram("mmo_query_latency_seconds", "Time to answer a query, per tier",
                                       ["tier", "cached"], buckets=LATENCY_BUCKETS, registry=reg)
        self.cache_hits = Counter("mmo_cache_hits", "Answers served from the Redis cache", registry=reg)
        self.cache_misses = Counter("mmo_cache_misses", "Queries not in the Redis cache", registry=reg)
        self.cache_errors = Counter("mmo_cache_errors", "Redis cache reads/writes that failed", registry=reg)
        self.cache_malformed = Counter("mmo_cache_malformed", "Cache entries that were not a JSON object (served as misses)",
                                       registry=reg)
        self.cache_skipped = Counter("mmo_cache_skipped",
                                     "Cache reads/writes skipped: Redis failed lately (breaker open) or too many writes",
                                     registry=reg)
        self.auth_failures = Counter("mmo_auth_failures", "Requests refused for a missing or wrong API key",
                                     ["reason"], registry=reg)
        self.ws_refused = Counter("mmo_ws_refused", "WebSocket upgrades refused (foreign Origin)", registry=reg)
        self.body_too_large = Counter("mmo_http_body_too_large", "Requests refused with 413 (body over the limit)",
                                      registry=reg)
        self.queued = Counter("mmo_tier_queued", "Generations that waited for a free slot of their tier",
                              ["tier"], registry=reg)
        self.rejected = Counter("mmo_tier_rejected", "Generations refused (429) after waiting for a slot",
                                ["tier"], registry=reg)
        self.upstream_errors = Counter("mmo_upstream_errors", "Failed llama-server calls per instance and kind",
                                       ["instance", "kind"], registry=reg)
        self.failovers = Counter("mmo_upstream_failovers",
                                 "Queries moved to the next instance after this instance failed",
                                 ["tier", "instance"], registry=reg)

    def render(self) -> bytes:
        if self._multiprocess:
            # Values live in PROMETHEUS_MULTIPROC_DIR files written by every worker.
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class RequestMetrics:
    """Counts HTTP requests by route template (not raw path: bounded label values) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # unless the app starts a response

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(method_label(scope["method"]), endpoint, status_label(status)).inc()
