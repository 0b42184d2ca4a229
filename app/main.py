"""The ASGI application: `app.main:app`."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.api_docs import DESCRIPTION, TAGS, TITLE
from app.api_docs_pages import install_docs
from app.clock import utc_now
from app.config import Settings, get_settings
from app.credit.policy import Policy
from app.customers.router import router as customers_router
from app.db import create_engine, create_sessionmaker, warn_without_timeouts
from app.decisions.router import router as decisions_router
from app.errors import FieldError, Problem, install_error_handlers
from app.ingestion.router import router as ingestion_router
from app.loans.router import router as loans_router
from app.malloc import keep_freed_memory
from app.observability.logging import configure_logging, flush_log_writer
from app.observability.middleware import ObservabilityMiddleware
from app.operations.router import router as operations_router
from app.policies import queries as policy_queries
from app.policies.router import router as policies_router
from app.policy_file import load_policy
from app.replicas import create_replicas
from app.schemas import MAX_ID
from app.security import install_security
from app.servicing.router import router as servicing_router


async def _register_policy(engine: AsyncEngine, policy: Policy) -> None:
    """Store the policy's version now, so GET /api/policies/{version} knows it before any decision. Best
    effort: with the database down the app still starts (/ready says so), and every decision's INSERT
    stores the version too."""
    try:
        await policy_queries.register(engine, policy)
    except (DBAPIError, OSError) as exc:
        logging.getLogger(__name__).warning("policy %s not stored at startup: %s", policy.version, exc)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format)
        keep_freed_memory()  # per process: every API worker runs its lifespan
        # First: an invalid policy file stops the app here, with the message naming the field.
        app.state.policy = load_policy(settings.credit_policy_file)
        engine = create_engine(settings)
        metrics.track_engine(engine)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.replicas = replicas = create_replicas(settings, engine)
        if replicas is not None:
            await replicas.check()  # reads use the replicas from the first request on
            replicas.start()
        app.state.redis = await create_pool(
            RedisSettings.from_dsn(settings.redis_url), default_queue_name=settings.arq_queue_name
        )
        await _register_policy(engine, app.state.policy)
        if settings.db_transaction_pooler:
            await warn_without_timeouts(engine)
        # Everything built so far (modules, schemas, routes, metadata) lives as long as the process. Left
        # to the cyclic GC, each full collection walked it all: 70-100 ms pauses of the worker, a dozen a
        # minute under load, and the whole p99. Frozen, full collections only see what requests create.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.redis.aclose()
            if replicas is not None:
                await replicas.close()
            metrics.untrack_engine(engine)
            await engine.dispose()
            metrics.mark_process_dead()
            flush_log_writer()  # the lines are written by a thread that lingers for company

    app = FastAPI(
        title=TITLE,
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Served by app.api_docs_pages, with local assets.
        docs_url=None,
        redoc_url=None,
        # Metrics are Prometheus (app.metrics) and no OpenTelemetry provider is configured: FastAPI's
        # native telemetry would only look the providers up again on every request (2% of a read).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.replicas = None  # the lifespan sets them up when DATABASE_REPLICA_URLS names any
    app.state.clock = utc_now
    install_error_handlers(app)
    install_docs(app)
    _add_routes(
        app,
        loans_router,
        servicing_router,
        customers_router,
        decisions_router,
        policies_router,
        ingestion_router,
        operations_router,
    )
    _declare_problem_schema(app)
    install_security(app, settings)
    # Added last, so outermost of the user middleware: it times, ids and logs whatever the others answer.
    app.add_middleware(ObservabilityMiddleware)
    return app


def _add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """The routers' routes, straight into the app's own list, the busiest first.

    `include_router` (FastAPI 0.165) keeps each router as a nested group that every request walks
    through: on its way to a route, a request was matched against each group before it, twice against its
    own, with scope bookkeeping per candidate: half of GET /health's CPU. The routes are complete where
    they are declared (prefix, tags, responses, route class), so the app holds them directly.

    A request is matched against the routes in order, so the order is the cost: the routers' own routes
    first (in the order given), then FastAPI's (the OpenAPI document, the docs pages), then the
    trailing-slash spellings. No two routes match the same request (tests/test_routes.py), so the order
    changes nothing else."""
    added = [route for router in routers for route in router.routes]
    trailing = [route for route in added if getattr(route, "path", "").endswith("/")]
    own = [route for route in added if not getattr(route, "path", "").endswith("/")]
    app.router.routes[:] = own + app.router.routes + trailing


def _exact_id_bounds(node: Any) -> None:
    """FastAPI's OpenAPI model holds schema bounds as floats, so the bigint id bound 2**63 - 1 would read
    back as 2**63; put the exact integer back wherever that float stands."""
    if isinstance(node, dict):
        if node.get("maximum") == float(MAX_ID) and node.get("type") == "integer":
            node["maximum"] = MAX_ID
        if node.get("minimum") == 1.0 and node.get("type") == "integer":
            node["minimum"] = 1
        for value in node.values():
            _exact_id_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_id_bounds(value)


def _declare_problem_schema(app: FastAPI) -> None:
    """Routes reference #/components/schemas/Problem for their problem+json errors; define it once."""
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build_openapi()
            _exact_id_bounds(document)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (Problem, FieldError):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schema.pop("$defs", None)
                schemas[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
