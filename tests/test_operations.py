"""Health, readiness, metrics and request ids, against the real PostgreSQL, Redis and an ARQ worker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.constants import health_check_key_suffix
from arq.worker import Worker
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import make_url

from app.config import Settings
from app.main import create_app
from app.operations import router as operations
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

PROBLEM_JSON = "application/problem+json"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _noop(ctx: dict[str, Any]) -> None:
    return None


@pytest.fixture
async def arq_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A real ARQ worker polling the test queue, alive until the test ends (or closes it)."""
    worker = Worker(
        functions=[_noop],
        redis_settings=RedisSettings.from_dsn(REDIS_URL),
        queue_name=settings.arq_queue_name,
        handle_signals=False,
        poll_delay=0.05,
        health_check_interval=5,
    )
    worker.main_task = asyncio.create_task(worker.main())
    probe = Redis.from_url(REDIS_URL)
    try:
        key = settings.arq_queue_name + health_check_key_suffix
        for _ in range(250):  # the worker offers no event to wait on: poll for its first heartbeat
            if await probe.exists(key):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the ARQ worker never wrote its health-check key")
        yield worker
    finally:
        await worker.close()
        await probe.aclose()


@pytest.fixture
async def started(settings: Settings) -> Callable[..., Any]:
    """Start an app from `settings` with changes; yields (app, client) through an async context manager."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def _start(**changes: Any) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
        app = create_app(settings.model_copy(update=changes))
        async with app.router.lifespan_context(app):
            transport = ASGITransport(app=app)
            async with AsyncClient(transport=transport, base_url="http://test") as client:
                yield app, client

    return _start


# --- /health -------------------------------------------------------------------------------------------


async def test_health_answers_without_touching_dependencies(started: Callable[..., Any]) -> None:
    dead_db = make_url("postgresql+asyncpg://postgres@127.0.0.1/credit").set(port=closed_port())
    async with started(database_url=dead_db.render_as_string(hide_password=False)) as (_, client):
        response = await client.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        # ...while the same app is not ready: liveness really ignores the database.
        assert (await client.get("/ready")).status_code == 503


# --- /ready --------------------------------------------------------------------------------------------


async def test_ready_when_database_redis_and_worker_are_up(client: AsyncClient, arq_worker: Worker) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "up",
        "redis": "up",
        "worker": "up",
    }


async def test_not_ready_once_the_worker_stops(client: AsyncClient, arq_worker: Worker) -> None:
    assert (await client.get("/ready")).status_code == 200
    await arq_worker.close()  # a clean shutdown deletes the health-check key

    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["detail"] == "Not ready: worker down."
    assert body["checks"]["worker"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "up"
    assert body["checks"]["redis"]["status"] == "up"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_not_ready_when_the_database_is_unreachable(started: Callable[..., Any]) -> None:
    dead_db = make_url("postgresql+asyncpg://postgres@127.0.0.1/credit").set(port=closed_port())
    async with started(database_url=dead_db.render_as_string(hide_password=False)) as (_, client):
        response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["status"] == "down"
    assert body["checks"]["database"]["error"]
    assert "database" in body["detail"]


async def test_not_ready_when_redis_is_unreachable(app: FastAPI, client: AsyncClient) -> None:
    healthy = app.state.redis
    app.state.redis = Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.5)
    try:
        response = await client.get("/ready")
    finally:
        await app.state.redis.aclose()
        app.state.redis = healthy
    assert response.status_code == 503
    body = response.json()
    assert body["detail"] == "Not ready: redis, worker down."
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "up"


async def test_a_hanging_dependency_fails_the_probe_in_bounded_time(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that accepts connections but never answers must not hang the probe."""
    monkeypatch.setattr(operations, "CHECK_TIMEOUT_S", 0.2)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    healthy = app.state.redis
    app.state.redis = Redis(host="127.0.0.1", port=port)
    try:
        async with asyncio.timeout(3):
            response = await client.get("/ready")
    finally:
        app.state.redis = healthy
        server.close()
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["error"] == "no answer within 0.2 s"


# --- /metrics ------------------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_by_route_template_and_status_class(client: AsyncClient) -> None:
    labels = {"method": "GET", "route": "/api/view-loan/{loan_id}", "status_class": "4xx"}
    before = sample("http_requests_total", **labels)
    before_latency = sample("http_request_duration_seconds_count", **labels)
    for loan_id in (987_654_321, 987_654_322, 987_654_323):
        assert (await client.get(f"/api/view-loan/{loan_id}")).status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = scrape_samples(response.text)
    key = frozenset(labels.items())
    assert samples[("http_requests_total", key)] == before + 3
    assert samples[("http_request_duration_seconds_count", key)] == before_latency + 3
    assert samples[("http_request_duration_seconds_bucket", key | {("le", "+Inf")})] >= 3
    # Raw paths never become label values.
    assert "987654321" not in response.text


async def test_unmatched_paths_share_one_label(client: AsyncClient) -> None:
    labels = {"method": "GET", "route": "<unmatched>", "status_class": "4xx"}
    before = sample("http_requests_total", **labels)
    await client.get("/no/such/path/1")
    await client.get("/no/such/path/2")
    assert sample("http_requests_total", **labels) == before + 2
    assert "/no/such/path" not in (await client.get("/metrics")).text


async def test_in_flight_counts_the_scrape_itself(client: AsyncClient) -> None:
    idle = sample("http_requests_in_flight")
    samples = scrape_samples((await client.get("/metrics")).text)
    assert samples[("http_requests_in_flight", frozenset())] == idle + 1
    assert sample("http_requests_in_flight") == idle


async def test_pool_gauge_reads_checked_out_connections_at_scrape_time(
    app: FastAPI, client: AsyncClient
) -> None:
    async def checked_out() -> float:
        samples = scrape_samples((await client.get("/metrics")).text)
        return samples[("db_pool_checked_out_connections", frozenset())]

    idle = await checked_out()
    async with app.state.engine.connect(), app.state.engine.connect():
        assert await checked_out() == idle + 2
    assert await checked_out() == idle


async def test_decisions_and_loans_are_counted(client: AsyncClient, make_customer: Any) -> None:
    customer = await make_customer(monthly_income=100_000)
    request = {
        "customer_id": customer["customer_id"],
        "loan_amount": 100_000,
        "interest_rate": 14,
        "tenure": 12,
    }

    eligibility = (await client.post("/api/check-eligibility", json=request)).json()
    labels = {
        "operation": "check_eligibility",
        "outcome": "approved" if eligibility["approval"] else "rejected",
        "reason": eligibility["reasons"][0],
    }
    before_check = sample("eligibility_decisions_total", **labels)
    before_loans = sample("loans_created_total")
    assert (await client.post("/api/check-eligibility", json=request)).status_code == 200
    assert sample("eligibility_decisions_total", **labels) == before_check + 1

    created = await client.post("/api/create-loan", json=request)
    assert created.status_code == 201, created.text
    assert sample("loans_created_total") == before_loans + 1
    assert sample("eligibility_decisions_total", **{**labels, "operation": "create_loan"}) >= 1

    too_much = {**request, "loan_amount": 900_000_000}
    rejected = (await client.post("/api/create-loan", json=too_much)).json()
    assert rejected["loan_approved"] is False
    assert sample("loans_created_total") == before_loans + 1


# --- operational endpoints stay out of the API description ---------------------------------------------


async def test_operational_endpoints_are_not_in_the_openapi_document(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not {"/health", "/ready", "/metrics"} & set(paths)


async def test_job_status_answers_503_when_redis_is_down(app: FastAPI, client: AsyncClient) -> None:
    healthy = app.state.redis
    app.state.redis = Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.5)
    try:
        response = await client.get("/api/ingestions/ingest-0123456789abcdef")
    finally:
        await app.state.redis.aclose()
        app.state.redis = healthy
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "1"
    assert "Redis" in response.json()["detail"]
