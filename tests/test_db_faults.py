"""Database faults: retried races, timeouts, a database that is down or hangs. Never a hang, never a
stack trace, never half a loan.

The retry tests provoke real PostgreSQL errors (a raised SQLSTATE, a deferred constraint failing at
COMMIT, a real deadlock between two requests) through test-only routes built like the real ones.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import APIRouter
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text

from app.config import Settings
from app.deps import SessionDep
from app.main import create_app
from app.retry import TransactionRetryRoute
from tests.conftest import migrated_database
from tests.live import connect, live_client, live_settings, register

pytestmark = pytest.mark.asyncio

LOAN = {"loan_amount": 10_000, "interest_rate": 14, "tenure": 12}
PROBES_SQL = """
CREATE TABLE retry_probe (id serial PRIMARY KEY, fail boolean NOT NULL);
CREATE FUNCTION retry_probe_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.fail THEN
        RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NULL;
END $$;
-- Deferred: the error is raised by COMMIT, after the endpoint has returned.
CREATE CONSTRAINT TRIGGER retry_probe_at_commit AFTER INSERT ON retry_probe
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION retry_probe_check();
CREATE TABLE deadlock_probe (id int PRIMARY KEY);
INSERT INTO deadlock_probe VALUES (1), (2);
"""


def probe_router(attempts: Counter[str]) -> APIRouter:
    router = APIRouter(prefix="/probe", route_class=TransactionRetryRoute)

    @router.post("/raise/{sqlstate}/{failures}")
    async def raise_sqlstate(sqlstate: str, failures: int, session: SessionDep) -> dict[str, int]:
        attempts["raise"] += 1
        await session.execute(text("INSERT INTO retry_probe (fail) VALUES (false)"))
        if attempts["raise"] <= failures:
            await session.execute(
                text(f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$")
            )
        return {"attempts": attempts["raise"]}

    @router.post("/fail-at-commit")
    async def fail_at_commit(session: SessionDep) -> dict[str, int]:
        attempts["commit"] += 1
        await session.execute(
            text("INSERT INTO retry_probe (fail) VALUES (:fail)"), {"fail": attempts["commit"] == 1}
        )
        return {"attempts": attempts["commit"]}

    @router.post("/lock/{first}/{second}")
    async def lock_in_order(first: int, second: int, session: SessionDep) -> dict[str, int]:
        attempts["lock"] += 1
        lock = text("SELECT id FROM deadlock_probe WHERE id = :id FOR UPDATE")
        await session.execute(lock, {"id": first})
        await asyncio.sleep(0.3)  # both requests now hold their first row
        await session.execute(lock, {"id": second})
        return {"attempts": attempts["lock"]}

    return router


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[str]:
    async with migrated_database("credit_faults") as url:
        connection = await connect(url)
        try:
            await connection.execute(PROBES_SQL)
        finally:
            await connection.close()
        yield url


@pytest.fixture
async def probed(database: str) -> AsyncIterator[tuple[AsyncClient, Counter[str]]]:
    attempts: Counter[str] = Counter()
    settings = live_settings(database)
    app = create_app(settings)
    app.include_router(probe_router(attempts))
    transport = ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client, attempts


async def _probe_rows(url: str) -> int:
    connection = await connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM retry_probe"))
    finally:
        await connection.close()


# -------------------------------------------------------------------------------------------- retries


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_a_serialization_failure_or_deadlock_is_retried(
    probed: tuple[AsyncClient, Counter[str]], database: str, sqlstate: str
) -> None:
    client, attempts = probed
    before = await _probe_rows(database)

    response = await client.post(f"/probe/raise/{sqlstate}/2")

    assert response.status_code == 200, response.text
    assert attempts["raise"] == 3
    # The failed attempts' writes were rolled back: only the successful attempt's row remains.
    assert await _probe_rows(database) == before + 1


async def test_retries_are_bounded_and_end_in_a_503(
    probed: tuple[AsyncClient, Counter[str]], database: str
) -> None:
    client, attempts = probed
    before = await _probe_rows(database)

    response = await client.post("/probe/raise/40001/99")

    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert attempts["raise"] == 3  # settings.db_retry_attempts
    assert await _probe_rows(database) == before


async def test_other_database_errors_are_not_retried(probed: tuple[AsyncClient, Counter[str]]) -> None:
    client, attempts = probed

    response = await client.post("/probe/raise/23514/1")  # check_violation: retrying cannot help

    assert attempts["raise"] == 1
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text and "injected" not in response.text


async def test_a_failure_at_commit_retries_the_whole_unit_of_work(
    probed: tuple[AsyncClient, Counter[str]], database: str
) -> None:
    client, _attempts = probed
    before = await _probe_rows(database)

    response = await client.post("/probe/fail-at-commit")

    assert response.status_code == 200, response.text
    assert response.json() == {"attempts": 2}
    assert await _probe_rows(database) == before + 1


async def test_a_real_deadlock_between_two_requests_resolves_by_retrying(
    probed: tuple[AsyncClient, Counter[str]],
) -> None:
    client, attempts = probed

    one, two = await asyncio.gather(client.post("/probe/lock/1/2"), client.post("/probe/lock/2/1"))

    assert (one.status_code, two.status_code) == (200, 200), (one.text, two.text)
    assert attempts["lock"] == 3  # PostgreSQL chose one victim; its request ran again and succeeded


# ------------------------------------------------------------------------------------------- timeouts


async def test_the_statement_and_lock_timeouts_are_set_on_every_connection(database: str) -> None:
    settings = live_settings(database, db_statement_timeout_ms=1234)
    async with live_client(settings) as (app, _), app.state.engine.connect() as connection:
        statement_timeout = await connection.scalar(text("SHOW statement_timeout"))
        lock_timeout = await connection.scalar(text("SHOW lock_timeout"))
    assert (statement_timeout, lock_timeout) == ("1234ms", "1234ms")


async def test_a_stuck_lock_answers_503_after_the_lock_timeout_and_stores_nothing(database: str) -> None:
    async with live_client(live_settings(database, db_statement_timeout_ms=300)) as (_, client):
        customer = await register(client)
        holder = await connect(database)
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            "SELECT 1 FROM customers WHERE customer_id = $1 FOR UPDATE", customer["customer_id"]
        )
        try:
            started = time.perf_counter()
            response = await client.post(
                "/api/create-loan", json={"customer_id": customer["customer_id"], **LOAN}
            )
            elapsed = time.perf_counter() - started
        finally:
            await transaction.rollback()
            await holder.close()
        loans = await client.get(f"/api/view-loans/{customer['customer_id']}")

    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"]
    assert elapsed < 2
    assert loans.json() == []


# -------------------------------------------------------------------------------- database unreachable


@contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung server, a dropped route)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


API_REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    (
        "POST",
        "/api/register",
        {
            "first_name": "A",
            "last_name": "B",
            "age": 30,
            "monthly_income": 50_000,
            "phone_number": 9_123_456_789,
        },
    ),
    ("POST", "/api/check-eligibility", {"customer_id": 1, **LOAN}),
    ("POST", "/api/create-loan", {"customer_id": 1, **LOAN}),
    ("GET", "/api/view-loan/1", None),
    ("GET", "/api/view-loans/1", None),
]


async def _down_app_answers(settings: Settings) -> list[tuple[int, float, Any]]:
    app = create_app(settings)
    answers = []
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test", timeout=30) as client,
    ):
        for method, path, body in API_REQUESTS:
            started = time.perf_counter()
            response = await client.request(method, path, json=body)
            answers.append((response, time.perf_counter() - started))
        ready = await client.get("/ready")
        health = await client.get("/health")
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["database"]["status"] == "down"
    assert ready.json()["checks"]["redis"]["status"] == "up"
    assert health.status_code == 200
    return answers


def _assert_503s(answers: list[Any], within_s: float) -> None:
    for response, elapsed in answers:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
        problem = response.json()
        assert problem["type"].endswith("/service-unavailable")
        assert "Traceback" not in response.text and "Error" not in problem["detail"]
        assert elapsed < within_s, f"{response.request.url} took {elapsed:.2f}s"


async def test_a_database_that_refuses_connections_answers_503_at_once(settings: Settings) -> None:
    down = settings.model_copy(update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/credit"})
    _assert_503s(await _down_app_answers(down), within_s=2.0)


async def test_a_database_that_never_answers_gives_503_after_the_connect_timeout(settings: Settings) -> None:
    with black_hole() as port:
        down = settings.model_copy(
            update={
                "database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/credit",
                "db_connect_timeout_s": 0.3,
            }
        )
        _assert_503s(await _down_app_answers(down), within_s=2.0)
