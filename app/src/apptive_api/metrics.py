"""Prometheus metrics, on a registry owned by each app instance (tests build many apps)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apptive_api.owner_cache import CacheStats

# Labels must stay bounded: unknown methods and unmatched paths collapse into one value each.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, version: str, instance: str) -> None:
        # The *_created series double the output and no dashboard here reads them.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "apptive_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "apptive_http_request_duration_seconds",
            "Time from request start to the last response byte, by route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "apptive_http_requests_in_flight",
            "Requests being served right now.",
            registry=self.registry,
        )
        self.store_ready = Gauge(
            "apptive_store_ready",
            "1 if the last health check found the shared volume mounted and writable.",
            registry=self.registry,
        )
        build_info = Gauge(
            "apptive_build_info",
            "Always 1; the labels carry the running version.",
            ["version", "instance", "python"],
            registry=self.registry,
        )
        build_info.labels(version, instance, platform.python_version()).set(1)

    def watch_store_cache(self, stats: Callable[[], CacheStats]) -> None:
        self.registry.register(_StoreCacheCollector(stats))

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled with the route template it matched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app dies before starting a response, that is what the client sees
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            # The router stored the matched route in this same scope dict.
            template = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)


class _StoreCacheCollector:
    """Reads the owner cache's counters at scrape time: the cache itself stays metrics-free."""

    def __init__(self, stats: Callable[[], CacheStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield GaugeMetricFamily(
            "apptive_store_cache_open_connections",
            "User databases this container holds open (and locked) right now.",
            value=s.open_connections,
        )
        yield GaugeMetricFamily(
            "apptive_store_cache_capacity",
            "Most user databases the owner cache keeps open (APPTIVE_STORE_CACHE_SIZE).",
            value=s.capacity,
        )
        counters = (
            ("hits", "Store operations served on an already open connection.", s.hits),
            ("misses", "Store operations that had to open the user's database.", s.misses),
            ("evictions", "Connections closed to stay within the capacity (LRU).", s.evictions),
            ("idle_closes", "Connections closed after the idle timeout.", s.idle_closes),
            ("error_closes", "Connections closed because an operation failed.", s.error_closes),
            (
                "busy_waits",
                "Opens that found the database locked by another owner and waited.",
                s.busy_waits,
            ),
            (
                "busy_timeouts",
                "Operations that gave up after the busy timeout (answered 503 store_busy).",
                s.busy_timeouts,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(f"apptive_store_cache_{name}", doc, value=value)
