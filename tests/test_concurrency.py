"""No double lending: bursts of parallel requests end exactly as a sequential run would.

Real PostgreSQL, a committed database, and the app on its real engine: every request below runs in its own
connection and transaction, so the customer row lock in create-loan is what serialises them (or fails to).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.credit.policy import approved_limit_for, installment
from tests.live import connect, live_app, register, register_body

pytestmark = [pytest.mark.asyncio, pytest.mark.live]

PARALLEL = 24


@pytest.fixture(scope="module")
async def live() -> AsyncIterator[tuple[str, FastAPI, AsyncClient]]:
    async with live_app("credit_concurrency") as running:
        yield running


async def _burst(client: AsyncClient, path: str, body: dict[str, Any], n: int = PARALLEL) -> list[Any]:
    return list(await asyncio.gather(*(client.post(path, json=body) for _ in range(n))))


async def _stored_loans(url: str, customer_id: int) -> list[Any]:
    connection = await connect(url)
    try:
        return list(
            await connection.fetch(
                "SELECT loan_amount, monthly_installment FROM loans WHERE customer_id = $1", customer_id
            )
        )
    finally:
        await connection.close()


async def test_parallel_loans_stop_exactly_at_the_approved_limit(
    live: tuple[str, FastAPI, AsyncClient],
) -> None:
    url, _, client = live
    customer = await register(client, monthly_income=50_000)
    limit = Decimal(str(customer["approved_limit"]))
    assert limit == approved_limit_for(Decimal(50_000)) == Decimal(1_800_000)
    amount, rate, tenure = Decimal(200_000), Decimal(12), 600
    room = int(limit // amount)  # 9: the 9th loan lands exactly on the limit, which is allowed
    emi = installment(amount, rate, tenure)
    assert room * emi <= Decimal(25_000), "the EMI rule must not be what binds here"
    body = {
        "customer_id": customer["customer_id"],
        "loan_amount": 200_000,
        "interest_rate": 12,
        "tenure": tenure,
    }

    responses = await _burst(client, "/api/create-loan", body)

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: room, 200: PARALLEL - room}, [r.text for r in responses if r.status_code >= 300]
    rejected = [r.json() for r in responses if r.status_code == 200]
    assert all(r["loan_approved"] is False and "limit_exceeded" in r["reasons"] for r in rejected)
    approved_ids = {r.json()["loan_id"] for r in responses if r.status_code == 201}
    stored = await _stored_loans(url, customer["customer_id"])
    assert len(approved_ids) == len(stored) == room
    assert sum(row["loan_amount"] for row in stored) == limit


async def test_parallel_loans_stop_exactly_at_half_the_salary_in_emis(
    live: tuple[str, FastAPI, AsyncClient],
) -> None:
    url, _, client = live
    customer = await register(client, monthly_income=50_000)
    amount, rate, tenure = Decimal(50_000), Decimal(12), 12
    emi = installment(amount, rate, tenure)
    room = int(Decimal(25_000) // emi)  # 5 loans of 4,442.44 a month fit in 25,000; a 6th does not
    assert room == 5 and room * amount < Decimal(customer["approved_limit"])
    body = {
        "customer_id": customer["customer_id"],
        "loan_amount": 50_000,
        "interest_rate": 12,
        "tenure": tenure,
    }

    responses = await _burst(client, "/api/create-loan", body)

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: room, 200: PARALLEL - room}
    rejected = [r.json() for r in responses if r.status_code == 200]
    assert all(r["reasons"] == ["emi_over_half_salary"] for r in rejected)
    stored = await _stored_loans(url, customer["customer_id"])
    assert len(stored) == room
    assert sum(row["monthly_installment"] for row in stored) <= Decimal(25_000)


async def test_parallel_bursts_for_two_customers_are_independent(
    live: tuple[str, FastAPI, AsyncClient],
) -> None:
    url, _, client = live
    first = await register(client, monthly_income=50_000)
    second = await register(client, monthly_income=50_000)

    def body(customer: dict[str, Any]) -> dict[str, Any]:
        return {
            "customer_id": customer["customer_id"],
            "loan_amount": 200_000,
            "interest_rate": 12,
            "tenure": 600,
        }

    responses = await asyncio.gather(
        *(
            client.post("/api/create-loan", json=body(c))
            for _ in range(PARALLEL // 2)
            for c in (first, second)
        )
    )

    assert Counter(r.status_code for r in responses) == {201: 18, 200: PARALLEL - 18}
    for customer in (first, second):
        assert len(await _stored_loans(url, customer["customer_id"])) == 9


async def test_a_locked_customer_does_not_block_another(live: tuple[str, FastAPI, AsyncClient]) -> None:
    url, _, client = live
    busy = await register(client, monthly_income=50_000)
    free = await register(client, monthly_income=50_000)
    loan = {"loan_amount": 10_000, "interest_rate": 14, "tenure": 12}

    # Another transaction (an officer's, a slow request's) holds the busy customer's row.
    holder = await connect(url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("SELECT 1 FROM customers WHERE customer_id = $1 FOR UPDATE", busy["customer_id"])
    try:
        waiting = asyncio.create_task(
            client.post("/api/create-loan", json={"customer_id": busy["customer_id"], **loan})
        )
        started = time.perf_counter()
        other = await client.post("/api/create-loan", json={"customer_id": free["customer_id"], **loan})
        elapsed = time.perf_counter() - started

        assert other.status_code == 201, other.text
        assert elapsed < 2, f"create-loan for another customer waited {elapsed:.2f}s"
        await asyncio.sleep(0.2)
        assert not waiting.done(), "create-loan must wait for the lock on its own customer"
    finally:
        await transaction.rollback()
        await holder.close()
    busy_response = await asyncio.wait_for(waiting, timeout=10)
    assert busy_response.status_code == 201, busy_response.text


async def test_double_submitted_registration_creates_one_customer(
    live: tuple[str, FastAPI, AsyncClient],
) -> None:
    url, _, client = live
    body = register_body()

    responses = await _burst(client, "/api/register", body)

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: 1, 409: PARALLEL - 1}, [r.text for r in responses if r.status_code >= 500]
    conflicts = [r for r in responses if r.status_code == 409]
    assert all(r.headers["content-type"] == "application/problem+json" for r in conflicts)
    assert all(r.json()["field"] == "phone_number" for r in conflicts)
    connection = await connect(url)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM customers WHERE phone_number = $1", body["phone_number"]
        )
    finally:
        await connection.close()
    assert count == 1
