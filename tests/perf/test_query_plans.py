"""No hot query may scan the loan book: EXPLAIN every statement the hot endpoints send, on 200,000 loans.

A committed throw-away database (the per-test rollback harness cannot ANALYZE what it never commits) is
filled with generated rows by `generate_series` in a few seconds and analysed, so the planner sees a
realistically sized `loans`. The statements are not copied here: the endpoints run against that database
and every statement they send is captured (SQL text and parameters, as asyncpg receives them), so a query
edited in app/loans/queries.py or app/customers/queries.py is checked as it is.

Each statement is explained twice: with its parameters (the custom plan of the first executions) and as a
generic plan (`plan_cache_mode = force_generic_plan`), which is what a prepared statement cached by asyncpg
may switch to after five executions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event

from app.config import Settings
from app.main import create_app
from tests.conftest import FIXED_NOW, REDIS_URL, migrated_database
from tests.live import asyncpg_dsn

pytestmark = pytest.mark.asyncio

CUSTOMERS = 10_000
LOANS = 200_000
GUARDED_TABLES = {"loans", "customers", "payments"}

# Loans spread over 2015-2026 with tenures of 6-125 months, so the current/closed filters of the hot queries
# select realistic fractions; emis_paid_on_time <= tenure (a CHECK constraint). Amounts and installments are
# small enough that every customer stays within limits: create-loan must reach its INSERT.
FILL_SQL = f"""
INSERT INTO customers (first_name, last_name, age, phone_number, monthly_salary, approved_limit)
SELECT 'First' || g, 'Last' || g, 20 + g % 50, 6000000000 + g, 50000 + (g % 200) * 1000,
       (50000 + (g % 200) * 1000) * 36
FROM generate_series(1, {CUSTOMERS}) AS g;

INSERT INTO loans (customer_id, source_loan_id, loan_amount, tenure, interest_rate, monthly_installment,
                   emis_paid_on_time, start_date, end_date, outstanding_principal, repayments_left)
SELECT 1 + g % {CUSTOMERS}, g, 10000 + (g % 10) * 5000, 6 + g % 120, 8 + (g % 10),
       500 + g % 500, (6 + g % 120) / 2, date '2015-01-01' + g % 4000,
       date '2015-01-01' + g % 4000 + make_interval(months => 6 + g % 120),
       10000 + (g % 10) * 5000, 6 + g % 120
FROM generate_series(1, {LOANS}) AS g;

-- Three payments on every odd loan: the statement must find a loan's payments without scanning them all.
INSERT INTO payments (loan_id, installment_number, paid_on, amount, interest, principal, on_time)
SELECT g, k, date '2015-01-01' + g % 4000 + make_interval(months => k), 100, 10, 90, true
FROM generate_series(1, {LOANS}, 2) AS g, generate_series(1, 3) AS k;
"""


@dataclass(frozen=True)
class Captured:
    endpoint: str
    statement: str
    parameters: tuple[Any, ...]


@dataclass(frozen=True)
class PlanDatabase:
    url: str  # the SQLAlchemy (postgresql+asyncpg) URL
    dsn: str  # the same database for asyncpg itself


@pytest.fixture(scope="module")
async def plan_database() -> AsyncIterator[PlanDatabase]:
    async with migrated_database("credit_plans") as url:
        dsn = asyncpg_dsn(url)
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(FILL_SQL)
            await connection.execute("ANALYZE customers; ANALYZE loans; ANALYZE payments;")
        finally:
            await connection.close()
        yield PlanDatabase(url=url, dsn=dsn)


class Capture:
    """Every statement the app sends, by both roads: SQLAlchemy's cursor events (sessions) and asyncpg's
    query logger on each pooled connection (app.db.Reader's reads, and the BEGIN/COMMIT asyncpg sends)."""

    def __init__(self, engine: Any) -> None:
        self.endpoint = ""
        self.captured: list[Captured] = []
        event.listen(engine, "before_cursor_execute", self._from_sqlalchemy)
        event.listen(engine, "connect", self._attach)

    def _attach(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(self._from_driver)

    def _from_sqlalchemy(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.captured.append(Captured(self.endpoint, statement, tuple(parameters or ())))

    def _from_driver(self, query: Any) -> None:  # asyncpg.connection.LoggedQuery
        self.captured.append(Captured(self.endpoint, query.query, tuple(query.args or ())))


@pytest.fixture(scope="module")
async def hot_statements(plan_database: PlanDatabase) -> list[Captured]:
    """Serve each hot endpoint once against the 200,000-loan database; return what each sent."""
    settings = Settings(database_url=plan_database.url, redis_url=REDIS_URL, api_keys="", log_level="WARNING")
    app = create_app(settings)
    customer_id, loan_id = CUSTOMERS // 2, LOANS // 2
    loan_body = {"customer_id": customer_id, "loan_amount": 1000, "interest_rate": 20, "tenure": 12}
    requests: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("check-eligibility", "POST", "/api/check-eligibility", loan_body),
        ("create-loan", "POST", "/api/create-loan", loan_body),
        ("view-loan", "GET", f"/api/view-loan/{loan_id}", None),
        ("view-loans", "GET", f"/api/view-loans/{customer_id}", None),
        ("view-loans closed", "GET", f"/api/view-loans/{customer_id}?status=closed", None),
        ("view-loans all", "GET", f"/api/view-loans/{customer_id}?status=all", None),
        # An even loan (no seeded payments) of its customer (1 + g % CUSTOMERS), with an EMI of 500.
        ("make-payment", "POST", f"/api/make-payment/{1 + loan_id % CUSTOMERS}/{loan_id}", {"amount": 500}),
        ("get-customer", "GET", f"/api/customers/{customer_id}", None),
        ("view-statement", "GET", f"/api/view-statement/{1 + loan_id % CUSTOMERS}/{loan_id}", None),
        (
            "register",
            "POST",
            "/api/register",
            {
                "first_name": "A",
                "last_name": "B",
                "age": 30,
                "monthly_income": 1000,
                "phone_number": 5123456789,
            },
        ),
    ]
    async with app.router.lifespan_context(app):
        app.state.clock = lambda: FIXED_NOW
        # The lifespan already used a connection (it stores the policy version): close it, so every
        # connection the requests use is opened with the capture's query logger attached.
        await app.state.engine.dispose()
        capture = Capture(app.state.engine.sync_engine)
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            for endpoint, method, path, body in requests:
                capture.endpoint = endpoint
                response = await client.request(method, path, json=body)
                await asyncio.sleep(0)  # asyncpg calls its query loggers with loop.call_soon
                assert response.status_code in (200, 201), (endpoint, response.text)
                if endpoint == "create-loan":
                    assert response.json()["loan_approved"], response.text
    captured = capture.captured
    assert {c.endpoint for c in captured} == {r[0] for r in requests}, "an endpoint sent no SQL"
    return captured


def _seq_scans(plan: dict[str, Any]) -> Iterator[str]:
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in GUARDED_TABLES:
        yield str(plan["Relation Name"])
    for child in plan.get("Plans", ()):
        yield from _seq_scans(child)


def _literal(value: Any) -> str:
    """An untyped SQL literal: PostgreSQL coerces it to the prepared statement's parameter type."""
    if value is None:
        return "NULL"
    if isinstance(value, dt.date | dt.datetime):
        value = value.isoformat()
    if isinstance(value, list | tuple):
        value = "{" + ",".join(str(item) for item in value) + "}"
    return "'" + str(value).replace("'", "''") + "'"


async def _plans(dsn: str, statement: str, parameters: tuple[Any, ...]) -> dict[str, dict[str, Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            custom = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *parameters)
            await connection.execute(f"PREPARE hot AS {statement}")
            await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            arguments = ", ".join(_literal(value) for value in parameters)
            execute = f"EXECUTE hot({arguments})" if parameters else "EXECUTE hot"
            generic = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {execute}")
            raise _Rollback  # nothing explained may stay behind (EXPLAIN does not run, but be sure)
    except _Rollback:
        pass
    finally:
        await connection.close()
    return {"custom": json.loads(custom)[0]["Plan"], "generic": json.loads(generic)[0]["Plan"]}


class _Rollback(Exception):
    pass


def _planned(captured: list[Captured]) -> list[Captured]:
    """The statements that have a plan (not BEGIN, COMMIT...)."""
    return [c for c in captured if c.statement.lstrip().upper().startswith(("SELECT", "INSERT", "WITH"))]


async def test_hot_queries_never_scan_the_loan_book(
    plan_database: PlanDatabase, hot_statements: list[Captured]
) -> None:
    failures = []
    for captured in _planned(hot_statements):
        for kind, plan in (await _plans(plan_database.dsn, captured.statement, captured.parameters)).items():
            tables = sorted(set(_seq_scans(plan)))
            if tables:
                failures.append(
                    f"{captured.endpoint} ({kind} plan) scans {', '.join(tables)} sequentially:\n"
                    f"{captured.statement}\n{json.dumps(plan, indent=1)}"
                )
    assert not failures, "\n\n".join(failures)


async def test_hot_statements_cover_every_endpoint(hot_statements: list[Captured]) -> None:
    """Guards the guard: the loans-reading statements were really captured and explained."""
    text = " ".join(c.statement.lower() for c in hot_statements)
    assert "from customers" in text and "join loans" in text
    assert "insert into loans" in text and "insert into customers" in text


@pytest.mark.parametrize(
    "endpoint",
    ["check-eligibility", "view-loan", "view-loans", "view-loans all", "view-statement", "get-customer"],
)
async def test_reads_are_one_round_trip_outside_the_test_harness(
    hot_statements: list[Captured], endpoint: str
) -> None:
    """Served by a real pool (not the rolled-back test connection): no BEGIN/COMMIT around the read."""
    sent = [c.statement for c in hot_statements if c.endpoint == endpoint]
    assert len(sent) == 1, sent


async def test_create_loan_is_one_transaction_of_three_statements(hot_statements: list[Captured]) -> None:
    # Order is not asserted: asyncpg reports to its loggers a loop iteration late.
    sent = [c.statement.split()[0].upper().rstrip(";") for c in hot_statements if c.endpoint == "create-loan"]
    assert sent.count("BEGIN") == sent.count("COMMIT") == 1, sent
    assert len(sent) <= 5, sent


async def test_make_payment_is_one_transaction_of_lock_and_write(hot_statements: list[Captured]) -> None:
    sent = [
        c.statement.split()[0].upper().rstrip(";") for c in hot_statements if c.endpoint == "make-payment"
    ]
    assert sent.count("BEGIN") == sent.count("COMMIT") == 1, sent
    assert len(sent) == 4, sent  # BEGIN, lock and read the loan, insert the payment and update, COMMIT


async def test_the_guard_sees_a_sequential_scan(plan_database: PlanDatabase) -> None:
    """A query that must scan the loan book is caught, so a passing run means something."""
    plans = await _plans(plan_database.dsn, "SELECT count(*) FROM loans WHERE tenure = $1", (12,))
    assert list(_seq_scans(plans["custom"])) == ["loans"]
