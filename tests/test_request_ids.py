"""X-Request-ID: accepted or generated, echoed, in problem bodies and log lines, passed into ARQ jobs."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.jobs import Job
from arq.worker import Worker, func
from fastapi import FastAPI, Request
from httpx import ASGITransport, AsyncClient
from prometheus_client import REGISTRY

from app.config import Settings
from app.observability.context import current_request_id
from app.observability.jobs import enqueue_with_request_id, observed_job
from app.observability.logging import configure_logging
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log_lines(app: FastAPI, settings: Settings) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Every JSON line logged (at INFO and above) during the test, parsed."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    configure_logging(settings.log_level, settings.log_format)


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "app.access"]


async def test_a_valid_request_id_is_echoed(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "checkout-42/retry 1"})
    assert response.headers["x-request-id"] == "checkout-42/retry 1"


async def test_a_request_id_is_generated_when_absent(client: AsyncClient) -> None:
    first = (await client.get("/health")).headers["x-request-id"]
    second = (await client.get("/health")).headers["x-request-id"]
    assert HEX32.fullmatch(first) and HEX32.fullmatch(second)
    assert first != second
    assert uuid.UUID(hex=first).version == 4


@pytest.mark.parametrize(
    "bad",
    [b"x" * 129, b"tab\there", "caf\u00e9".encode("latin-1"), b"   "],
    ids=["too-long", "control-char", "non-ascii", "blank"],
)
async def test_an_invalid_request_id_is_replaced(client: AsyncClient, bad: bytes) -> None:
    response = await client.get("/health", headers=[(b"X-Request-ID", bad)])
    echoed = response.headers["x-request-id"]
    assert HEX32.fullmatch(echoed), echoed


async def test_the_longest_valid_request_id_is_kept(client: AsyncClient) -> None:
    longest = "r" * 128
    assert (await client.get("/health", headers={"X-Request-ID": longest})).headers["x-request-id"] == longest


async def test_problem_bodies_carry_the_request_id(client: AsyncClient) -> None:
    not_found = await client.get("/api/view-loan/987654321", headers={"X-Request-ID": "trace-404"})
    assert not_found.status_code == 404
    assert not_found.json()["request_id"] == "trace-404"
    assert not_found.headers["x-request-id"] == "trace-404"
    # Exactly one header, though both the middleware and the problem renderer know the id.
    assert not_found.headers.get_list("x-request-id") == ["trace-404"]

    invalid = await client.post("/api/check-eligibility", json={})
    assert invalid.status_code == 422
    assert invalid.json()["request_id"] == invalid.headers["x-request-id"]


async def test_an_unhandled_error_answers_500_with_the_request_id_and_logs_it(
    app: FastAPI, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    async def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom, include_in_schema=False)
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom", headers={"X-Request-ID": "trace-500"})

    assert response.status_code == 500
    assert response.json()["request_id"] == "trace-500"
    assert response.headers["x-request-id"] == "trace-500"
    lines = log_lines()
    error = next(line for line in lines if line["level"] == "ERROR")
    assert error["request_id"] == "trace-500"
    assert "kaboom" in error["exc_info"]
    access = access_lines(lines)[-1]
    assert (access["route"], access["status"], access["request_id"]) == ("/boom", 500, "trace-500")


async def test_access_log_line_per_request(
    client: AsyncClient, make_customer: Any, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    customer = await make_customer()
    customer_id = customer["customer_id"]
    response = await client.get(
        f"/api/view-loans/{customer_id}", params={"status": "all"}, headers={"X-Request-ID": "trace-list"}
    )
    assert response.status_code == 200

    lines = access_lines(log_lines())
    line = next(line for line in lines if line["request_id"] == "trace-list")
    assert line["method"] == "GET"
    assert line["route"] == "/api/view-loans/{customer_id}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["message"] == "GET /api/view-loans/{customer_id} 200"
    assert line["timestamp"].endswith("Z") and line["level"] == "INFO"
    # Never the raw path, the query string or the body.
    raw = json.dumps(lines)
    assert f"/api/view-loans/{customer_id}" not in raw
    assert "status=all" not in raw
    assert str(customer["phone_number"]) not in raw
    # One line per request, registrations included.
    assert len(lines) == 2


async def test_log_lines_inside_a_request_carry_its_id_and_route(
    app: FastAPI, client: AsyncClient, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    async def chatty() -> dict[str, str]:
        logging.getLogger("app.test").warning("inside the handler")
        return {}

    app.add_api_route("/chatty/{thing}", chatty, include_in_schema=False)
    await client.get("/chatty/7", headers={"X-Request-ID": "trace-chatty"})

    line = next(line for line in log_lines() if line["message"] == "inside the handler")
    assert line["request_id"] == "trace-chatty"
    assert line["route"] == "/chatty/{thing}"
    assert line["logger"] == "app.test"


# --- into the ARQ jobs ---------------------------------------------------------------------------------


async def test_a_job_enqueued_by_a_request_runs_with_its_request_id(
    app: FastAPI, client: AsyncClient, settings: Settings, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    queue = settings.arq_queue_name + ":request-ids"

    async def enqueue(request: Request) -> dict[str, str]:
        job = await enqueue_with_request_id(request.app.state.redis, "probe", 7, _queue_name=queue)
        assert job is not None
        return {"job_id": job.job_id}

    app.add_api_route("/enqueue", enqueue, methods=["POST"], include_in_schema=False)

    @observed_job
    async def probe(ctx: dict[str, Any], value: int) -> dict[str, Any]:
        logging.getLogger("app.jobs.probe").warning("probing %d", value)
        return {"value": value, "request_id": current_request_id()}

    response = await client.post("/enqueue", headers={"X-Request-ID": "trace-job"})
    job_id = response.json()["job_id"]
    job = Job(job_id, app.state.redis, _queue_name=queue)
    info = await job.info()
    assert info is not None and info.kwargs == {"request_id": "trace-job"}

    successes = REGISTRY.get_sample_value(
        "job_duration_seconds_count", {"job": "probe", "outcome": "success"}
    )
    worker = Worker(
        functions=[func(probe, name="probe")],
        redis_settings=RedisSettings.from_dsn(REDIS_URL),
        queue_name=queue,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
    )
    try:
        await worker.main()
    finally:
        await worker.close()

    assert await job.result(timeout=5) == {"value": 7, "request_id": "trace-job"}
    line = next(line for line in log_lines() if line["message"] == "probing 7")
    assert line["request_id"] == "trace-job"
    assert line["job"] == "probe"
    after = REGISTRY.get_sample_value("job_duration_seconds_count", {"job": "probe", "outcome": "success"})
    assert after == (successes or 0) + 1


async def test_a_job_outside_any_request_gets_its_own_id_and_failures_are_timed() -> None:
    @observed_job
    async def fails(ctx: dict[str, Any]) -> None:
        assert HEX32.fullmatch(current_request_id() or "")
        raise ValueError("bad workbook")

    labels = {"job": "fails", "outcome": "failure"}
    before = REGISTRY.get_sample_value("job_duration_seconds_count", labels) or 0
    with pytest.raises(ValueError):
        await fails({})
    assert REGISTRY.get_sample_value("job_duration_seconds_count", labels) == before + 1
    assert current_request_id() is None
