"""The service behind a real PgBouncer in transaction pooling mode (issue #15), with few server connections
so that every client shares them.

The whole set of live tests also runs once through PgBouncer (`make test`'s second pass,
`pytest --through-pgbouncer`); these show why the driver needs DB_TRANSACTION_POOLER and that with it the
hot reads, the writes and their locks hold under concurrency.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.ingestion.jobs import worker_engine
from tests.conftest import ADMIN_URL, migrated_database
from tests.engines import PgBouncer, start_pgbouncer
from tests.live import asyncpg_dsn, borrow, live_client, live_settings, register

SERVER_CONNECTIONS = 4


@pytest.fixture(scope="module")
def bouncer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    running = start_pgbouncer(ADMIN_URL, tmp_path_factory.mktemp("pgbouncer"), pool_size=SERVER_CONNECTIONS)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[str]:
    async with migrated_database("credit_pgbouncer") as url:
        yield url


async def _distinct_statements(dsn: str, statement_cache_size: int) -> Counter[str]:
    """40 clients on 4 server connections, each sending 25 statements of its own."""

    async def client(number: int) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        connection = await asyncpg.connect(dsn, statement_cache_size=statement_cache_size)
        try:
            for step in range(25):
                try:
                    value = await connection.fetchval(f"SELECT $1::int + {number}", step)
                    outcomes["right" if value == step + number else "wrong"] += 1
                except asyncpg.PostgresError as error:
                    outcomes[type(error).__name__] += 1
        finally:
            await connection.close()
        return outcomes

    return sum(await asyncio.gather(*(client(n) for n in range(40))), Counter())


async def test_asyncpg_s_statement_cache_breaks_behind_a_transaction_pooler(
    bouncer: PgBouncer, database: str
) -> None:
    dsn = asyncpg_dsn(bouncer.url(database))
    cached = await _distinct_statements(dsn, statement_cache_size=100)
    # The failure: a named statement prepared on one server connection, run on another.
    assert cached["right"] < 1_000 and set(cached) - {"right"}, cached
    assert cached["wrong"] == 0, cached
    # What DB_TRANSACTION_POOLER sets: the unnamed statement, parsed and run in one go.
    assert await _distinct_statements(dsn, statement_cache_size=0) == Counter(right=1_000)


async def test_the_app_holds_behind_pgbouncer_under_concurrency(
    bouncer: PgBouncer, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = live_settings(bouncer.url(database), db_transaction_pooler=True, db_pool_size=20)
    async with live_client(settings) as (app, client):
        # The test server sets no statement_timeout, and through the pooler the app cannot send one.
        assert "ALTER ROLE <role> SET statement_timeout" in caplog.text
        customers = [await register(client, monthly_income=300_000) for _ in range(4)]
        loans = [await borrow(client, c["customer_id"], amount=12_000) for c in customers for _ in range(2)]
        paths = [f"/api/view-loan/{loan}" for loan in loans]
        paths += [f"/api/view-loans/{c['customer_id']}" for c in customers]
        paths += [f"/api/customers/{c['customer_id']}" for c in customers]
        paths += [f"/api/view-statement/{customers[0]['customer_id']}/{loans[0]}"]
        statuses: Counter[int] = Counter()
        for _ in range(5):
            responses = await asyncio.gather(*(client.get(path) for path in paths * 4))
            statuses.update(r.status_code for r in responses)
            eligibility = await asyncio.gather(
                *(
                    client.post(
                        "/api/check-eligibility",
                        json={
                            "customer_id": c["customer_id"],
                            "loan_amount": 5_000,
                            "interest_rate": 12,
                            "tenure": 6,
                        },
                    )
                    for c in customers * 8
                )
            )
            statuses.update(r.status_code for r in eligibility)
        assert statuses == {200: 5 * (len(paths) * 4 + 32)}, statuses

        # Parallel payments on one loan: its row lock holds through the pooler (one per installment).
        customer_id, loan_id = customers[1]["customer_id"], loans[2]
        view = (await client.get(f"/api/view-loan/{loan_id}")).json()
        payments = await asyncio.gather(
            *(
                client.post(
                    f"/api/make-payment/{customer_id}/{loan_id}",
                    json={"amount": view["monthly_installment"], "paid_on": "2026-06-15"},
                )
                for _ in range(8)
            )
        )
        settled = sorted(r.json()["installment_number"] for r in payments if r.status_code == 201)
        assert settled == list(range(1, len(settled) + 1)) and len(settled) >= 1
        assert all(r.status_code in (201, 409, 422) for r in payments), [r.text for r in payments]
        # Session settings do not reach the server through the pooler: they come from the role.
        async with app.state.engine.connect() as connection:
            name = (await connection.exec_driver_sql("SHOW application_name")).scalar()
        assert name == "credit-approval"


def test_the_pooler_is_ours(bouncer: PgBouncer, tmp_path: Path) -> None:
    assert bouncer.port != 5432 and bouncer.process.poll() is None


async def test_the_worker_s_long_timeouts_hold_behind_the_pooler(bouncer: PgBouncer, database: str) -> None:
    """The worker's statement timeout (the job's budget) cannot go at connect through PgBouncer: it is set
    in each transaction, or a million-row merge would run under the role's 10 s."""
    settings = live_settings(bouncer.url(database), db_transaction_pooler=True, ingestion_job_timeout_s=1234)
    engine = worker_engine(settings)
    try:
        async with engine.begin() as connection:
            timeouts = [
                (await connection.exec_driver_sql(f"SHOW {name}")).scalar()
                for name in ("statement_timeout", "lock_timeout")
            ]
    finally:
        await engine.dispose()
    assert timeouts == ["1234s", "1234s"]
