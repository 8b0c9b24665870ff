"""Application factory: wires config, store, health probe, metrics and middleware."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp

from apptive_api import routes
from apptive_api.config import Config
from apptive_api.errors import (
    ApiError,
    handle_api_error,
    handle_http_exception,
    handle_unexpected,
)
from apptive_api.health import HealthProbe
from apptive_api.metrics import Metrics, MetricsMiddleware
from apptive_api.owner_cache import OwnerConnections
from apptive_api.readiness import Readiness, check_data_dir
from apptive_api.served_by import ServedByMiddleware
from apptive_api.store import ConnectionProvider, PerRequestConnections, SqliteStore, Store

log = logging.getLogger("apptive_api")


def create_app(
    config: Config,
    store: Store | None = None,
    readiness: Callable[[Path], Readiness] = check_data_dir,
) -> ASGIApp:
    """The whole service as one ASGI app; store and readiness check are replaceable seams."""
    metrics = Metrics(config.version, config.instance)
    if store is None:
        store = SqliteStore(_connections(config, readiness, metrics))
    health = HealthProbe(
        config.data_dir, config.health_timeout_s, metrics.store_ready.set, readiness
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info(
            "apptive-api %s starting as %s, data dir %s",
            config.version,
            config.instance,
            config.data_dir,
        )
        # Log the state at start so an unmounted volume is visible right away in the logs.
        await health.check()
        try:
            yield
        finally:
            store.close()
            log.info("apptive-api stopped")

    app = Starlette(
        routes=[
            Route(routes.RECORD_PATH, routes.Record),
            Route(routes.RECORDS_PATH, routes.RecordList),
            Route("/health", routes.health, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            # Registered for Exception, Starlette's outermost error middleware uses it for 500s.
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    # A redirect is not a JSON error: "/records/" is simply not a route.
    app.router.redirect_slashes = False
    app.state.config = config
    app.state.store = store
    app.state.health = health
    app.state.metrics = metrics
    # Outside Starlette's own stack so that even its 500 responses are counted and labelled.
    return ServedByMiddleware(MetricsMiddleware(app, metrics), config.instance)


def _connections(
    config: Config, readiness: Callable[[Path], Readiness], metrics: Metrics
) -> ConnectionProvider:
    if config.store_cache_size == 0:
        # 1.0's behaviour, kept as the switch-off: open and close per request.
        return PerRequestConnections(config.data_dir, config.busy_timeout_ms, readiness)
    cache = OwnerConnections(
        config.data_dir,
        config.busy_timeout_ms,
        capacity=config.store_cache_size,
        idle_timeout_s=config.store_idle_timeout_s,
        sweep_interval_s=config.store_sweep_interval_s,
        readiness=readiness,
    )
    metrics.watch_store_cache(cache.stats)
    return cache
