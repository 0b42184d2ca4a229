"""Round trips per request: each hot endpoint must keep to the statements it needs, and no more.

Counts every statement sent to PostgreSQL while a request is served, by both roads a statement can take:
SQLAlchemy's ``before_cursor_execute`` on the engine the test connection belongs to (sessions), and
asyncpg's query logger on that connection's driver (app.db.Reader, which runs the hot reads on the driver;
asyncpg also logs any BEGIN/COMMIT it sends). Savepoints are the test harness's own (sessions join the
test's outer transaction through them) and are not counted.
A failure here means a request grew a query: an N+1, a lazy load, a second read of the same rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.live import borrow

pytestmark = pytest.mark.asyncio

_HARNESS_PREFIXES = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __len__(self) -> int:
        return len(self.statements)

    def __str__(self) -> str:
        return "\n---\n".join(self.statements) or "(no statements)"


@asynccontextmanager
async def counting(connection: AsyncConnection) -> AsyncIterator[StatementLog]:
    """Record the statements the application sends through `connection` inside the block."""
    engine = connection.engine.sync_engine
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    log = StatementLog()

    def add(statement: str) -> None:
        if not statement.lstrip().upper().startswith(_HARNESS_PREFIXES):
            log.statements.append(statement)

    def from_sqlalchemy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        add(statement)

    def from_driver(query: Any) -> None:  # asyncpg.connection.LoggedQuery
        add(query.query)

    # The harness's outer transaction sends its BEGIN with the first statement: get it out of the way.
    await connection.execute(text("SELECT 1"))
    event.listen(engine, "before_cursor_execute", from_sqlalchemy)
    driver.add_query_logger(from_driver)
    try:
        yield log
    finally:
        await asyncio.sleep(0)  # asyncpg calls its query loggers with loop.call_soon
        driver.remove_query_logger(from_driver)
        event.remove(engine, "before_cursor_execute", from_sqlalchemy)


async def test_check_eligibility_is_one_statement(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=100_000)
    await borrow(client, customer["customer_id"], rate=14)
    body = {"customer_id": customer["customer_id"], "loan_amount": 50_000, "interest_rate": 12, "tenure": 24}

    async with counting(connection) as log:
        response = await client.post("/api/check-eligibility", json=body)

    assert response.status_code == 200, response.text
    assert len(log) == 1, str(log)


async def test_unknown_customer_eligibility_is_one_statement(
    client: AsyncClient, connection: AsyncConnection
) -> None:
    body = {"customer_id": 10**12, "loan_amount": 50_000, "interest_rate": 12, "tenure": 24}
    async with counting(connection) as log:
        response = await client.post("/api/check-eligibility", json=body)
    assert response.status_code == 404, response.text
    assert len(log) == 1, str(log)


async def test_view_loan_is_one_statement(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=100_000)
    loan_id = await borrow(client, customer["customer_id"], rate=14)

    async with counting(connection) as log:
        response = await client.get(f"/api/view-loan/{loan_id}")

    assert response.status_code == 200, response.text
    assert len(log) == 1, str(log)


@pytest.mark.parametrize("status", ["current", "closed", "all"])
async def test_view_loans_is_one_statement_whatever_the_loan_count(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any], status: str
) -> None:
    customer = await make_customer(monthly_income=200_000)
    for _ in range(3):
        await borrow(client, customer["customer_id"], rate=14)

    async with counting(connection) as log:
        response = await client.get(f"/api/view-loans/{customer['customer_id']}", params={"status": status})

    assert response.status_code == 200, response.text
    assert len(log) == 1, str(log)


async def test_register_is_one_statement(client: AsyncClient, connection: AsyncConnection) -> None:
    body = {
        "first_name": "Asha",
        "last_name": "Rao",
        "age": 30,
        "monthly_income": 50_000,
        "phone_number": 7_123_456_789,
    }
    async with counting(connection) as log:
        response = await client.post("/api/register", json=body)
    assert response.status_code == 201, response.text
    assert len(log) == 1, str(log)


async def test_create_loan_is_lock_read_insert(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=100_000)
    await borrow(client, customer["customer_id"], rate=14)
    body = {"customer_id": customer["customer_id"], "loan_amount": 10_000, "interest_rate": 14, "tenure": 12}

    async with counting(connection) as log:
        response = await client.post("/api/create-loan", json=body)

    assert response.status_code == 201, response.text
    # Lock, read, and one INSERT for the loan and its decision's record.
    assert len(log) == 3, str(log)
    assert any("INSERT INTO loans" in s and "INSERT INTO credit_decisions" in s for s in log.statements)


async def test_rejected_create_loan_does_not_insert(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=30_000)
    body = {"customer_id": customer["customer_id"], "loan_amount": 10**11, "interest_rate": 14, "tenure": 12}

    async with counting(connection) as log:
        response = await client.post("/api/create-loan", json=body)

    assert response.status_code == 200, response.text
    assert response.json()["loan_approved"] is False
    # Lock, read, and the decision's record: no loan.
    assert len(log) == 3, str(log)
    assert "INSERT INTO credit_decisions" in str(log) and "INSERT INTO loans" not in str(log)


async def test_make_payment_is_lock_then_write(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=100_000)
    loan_id = await borrow(client, customer["customer_id"], rate=14)

    async with counting(connection) as log:
        response = await client.post(
            f"/api/make-payment/{customer['customer_id']}/{loan_id}", json={"amount": 900}
        )

    assert response.status_code == 201, response.text
    assert len(log) == 2, str(log)


async def test_view_statement_is_one_statement_whatever_the_payment_count(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=100_000)
    loan_id = await borrow(client, customer["customer_id"], rate=14)
    for _ in range(3):
        paid = await client.post(
            f"/api/make-payment/{customer['customer_id']}/{loan_id}", json={"amount": 900}
        )
        assert paid.status_code == 201, paid.text

    async with counting(connection) as log:
        response = await client.get(f"/api/view-statement/{customer['customer_id']}/{loan_id}")

    assert response.status_code == 200, response.text
    assert len(response.json()["payments"]) == 3
    assert len(log) == 1, str(log)


async def test_get_customer_is_one_statement_whatever_the_loan_count(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=200_000)
    for _ in range(3):
        await borrow(client, customer["customer_id"], rate=14)

    async with counting(connection) as log:
        response = await client.get(f"/api/customers/{customer['customer_id']}")

    assert response.status_code == 200, response.text
    assert response.json()["credit"]["active_loans"] == 3
    assert len(log) == 1, str(log)
