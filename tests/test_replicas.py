"""Reads on a real streaming replica (issue #15): a primary and a hot standby of our own, made with
`pg_basebackup -R` on spare ports with the embedded stack's binaries.

- Reads are answered by the replica: `pg_is_in_recovery()` through the Reader the routes use, and, through
  the API, a loan written while the replica's replay is paused stays invisible until replay resumes.
- Writes stay on the primary (the replica would refuse them: it is read-only).
- A replica lagging past REPLICA_MAX_LAG_MS, or stopped, gets no reads; the primary answers, no 5xx; both
  show in /ready and /metrics, and the replica is used again once it recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient
from sqlalchemy.exc import DBAPIError

from app.db import Reader, Statement, _replica_may_fail, _replica_out
from app.devstack import ensure_database
from app.replicas import replica_name
from tests.conftest import migrated_database, run_migrations
from tests.engines import Server, start_primary, start_replica
from tests.live import asyncpg_dsn, borrow, live_client, live_settings, register

IN_RECOVERY = Statement("SELECT pg_is_in_recovery()", ())


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    base = tmp_path_factory.mktemp("replication")
    primary = start_primary(base / "primary")
    replica: Server | None = None
    try:
        ensure_database(primary.url())
        run_migrations(primary.url())
        replica = start_replica(primary, base / "replica")
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


def replica_settings(primary: Server, replica: Server, **overrides: Any) -> Any:
    values: dict[str, Any] = {"database_replica_urls": replica.url(), "replica_check_interval_s": 0.1}
    values.update(overrides)
    return live_settings(primary.url(), db_pool_size=5, **values)


async def on_replica(replica: Server, sql: str) -> Any:
    connection = await asyncpg.connect(asyncpg_dsn(replica.url()))
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def listed_loans(client: AsyncClient, customer_id: int) -> set[int]:
    response = await client.get(f"/api/view-loans/{customer_id}")
    assert response.status_code == 200, response.text
    return {item["loan_id"] for item in response.json()}


async def replica_report(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/ready")
    # Redis and the worker are not this test's concern: the replicas are reported either way.
    (report,) = response.json()["replicas"]
    return dict(report)


async def test_reads_are_answered_by_the_replica_and_writes_by_the_primary(
    engines: tuple[Server, Server],
) -> None:
    primary, replica = engines
    # A lag bound far above the test: the paused replica stays in use.
    settings = replica_settings(primary, replica, replica_max_lag_ms=600_000)
    async with live_client(settings) as (app, client):
        reader = Reader(app.state.engine, app.state.replicas)
        assert [row[0] for row in await reader.fetch(IN_RECOVERY)] == [True]
        assert [row[0] for row in await Reader(app.state.engine).fetch(IN_RECOVERY)] == [False]

        customer_id = (await register(client, monthly_income=200_000))["customer_id"]
        first = await borrow(client, customer_id)  # a write: the replica would refuse it
        await until(lambda: _has(client, customer_id, first))

        await on_replica(replica, "SELECT pg_wal_replay_pause()")
        try:
            second = await borrow(client, customer_id)
            for _ in range(10):
                # Answered by the replica, which has not replayed the second loan.
                assert await listed_loans(client, customer_id) == {first}
            eligibility = await client.post(
                "/api/check-eligibility",
                json={"customer_id": customer_id, "loan_amount": 10_000, "interest_rate": 12, "tenure": 12},
            )
            assert eligibility.status_code == 200, eligibility.text
        finally:
            await on_replica(replica, "SELECT pg_wal_replay_resume()")
        await until(lambda: _has(client, customer_id, second))
        assert (await replica_report(client))["state"] == "ok"

        # Every read route's statement runs on a standby (none writes, none needs the primary).
        reads = [
            f"/api/customers/{customer_id}",
            f"/api/view-loan/{second}",
            f"/api/view-statement/{customer_id}/{second}",
            f"/api/customers/{customer_id}/decisions",
            "/api/policy",
        ]
        for path in reads:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
        decision_id = (await client.get(f"/api/customers/{customer_id}/decisions")).json()["items"][0]
        assert (await client.get(f"/api/decisions/{decision_id['decision_id']}")).status_code == 200


async def _has(client: AsyncClient, customer_id: int, loan_id: int) -> bool:
    """Whether view-loans lists the loan yet. A replica that has not replayed the customer's registration
    answers 404 for a few milliseconds: the lag a client of replica reads can see (docs/scaling.md)."""
    response = await client.get(f"/api/view-loans/{customer_id}")
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200 and loan_id in {item["loan_id"] for item in response.json()}


async def test_a_lagging_replica_is_skipped_until_it_catches_up(engines: tuple[Server, Server]) -> None:
    primary, replica = engines
    settings = replica_settings(primary, replica, replica_max_lag_ms=300)
    name = replica_name(replica.url())
    async with live_client(settings) as (_, client):
        customer_id = (await register(client, monthly_income=200_000))["customer_id"]
        await until(lambda: _state_is(client, "ok"))
        await on_replica(replica, "SELECT pg_wal_replay_pause()")
        try:
            loan_id = await borrow(client, customer_id)
            await until(lambda: _state_is(client, "lagging"))
            report = await replica_report(client)
            assert report["lag_ms"] > 300, report
            # The primary answers: the new loan is there at once, no error.
            assert loan_id in await listed_loans(client, customer_id)
            scrape = (await client.get("/metrics")).text
            assert f'db_replica_up{{replica="{name}"}} 0.0' in scrape
        finally:
            await on_replica(replica, "SELECT pg_wal_replay_resume()")
        await until(lambda: _state_is(client, "ok"))
        scrape = (await client.get("/metrics")).text
        assert f'db_replica_up{{replica="{name}"}} 1.0' in scrape
        assert f'db_replica_lag_seconds{{replica="{name}"}}' in scrape


async def _state_is(client: AsyncClient, state: str) -> bool:
    return (await replica_report(client))["state"] == state


async def test_a_stopped_replica_costs_no_request(engines: tuple[Server, Server]) -> None:
    primary, replica = engines
    async with live_client(replica_settings(primary, replica)) as (app, client):
        customer_id = (await register(client, monthly_income=200_000))["customer_id"]
        loan_id = await borrow(client, customer_id)
        await until(lambda: _has(client, customer_id, loan_id))
        path = f"/api/view-loan/{loan_id}"
        warm = await asyncio.gather(*(client.get(path) for _ in range(10)))  # pooled replica connections
        assert {r.status_code for r in warm} == {200}

        await asyncio.to_thread(replica.stop)
        try:
            statuses = [(await client.get(path)).status_code for _ in range(30)]
            statuses += [r.status_code for r in await asyncio.gather(*(client.get(path) for _ in range(20)))]
            assert statuses == [200] * 50, statuses
            await until(lambda: _state_is(client, "down"))
            ready = await client.get("/ready")
            assert ready.json()["replicas"][0]["state"] == "down"
            assert "error" in ready.json()["replicas"][0]
        finally:
            await asyncio.to_thread(replica.start)
        await until(lambda: _state_is(client, "ok"))
        reader = Reader(app.state.engine, app.state.replicas)
        assert [row[0] for row in await reader.fetch(IN_RECOVERY)] == [True]
        assert (await client.get(path)).status_code == 200


async def test_a_read_that_finds_the_replica_gone_is_answered_by_the_primary(
    engines: tuple[Server, Server],
) -> None:
    """With no check due for a minute, the reads themselves find the stopped replica: each failed one is
    answered by the primary and counted, and the first takes the replica out of rotation."""
    primary, replica = engines
    name = replica_name(replica.url())
    settings = replica_settings(primary, replica, replica_check_interval_s=60)
    async with live_client(settings) as (app, client):
        customer_id = (await register(client, monthly_income=200_000))["customer_id"]
        await until(lambda: _listed(client, customer_id))
        path = f"/api/view-loans/{customer_id}"
        assert {(await client.get(path)).status_code for _ in range(5)} == {200}  # pooled replica connections
        failures_before = await _read_failures(client, name)

        await asyncio.to_thread(replica.stop)
        try:
            statuses = [r.status_code for r in await asyncio.gather(*(client.get(path) for _ in range(20)))]
            assert statuses == [200] * 20, statuses
            report = await replica_report(client)
            assert report["state"] == "down", report  # by the failed read: no check has run since
            assert await _read_failures(client, name) > failures_before
            assert app.state.replicas.pick() is None
        finally:
            await asyncio.to_thread(replica.start)
        await app.state.replicas.check()
        assert (await replica_report(client))["state"] == "ok"


async def _read_failures(client: AsyncClient, name: str) -> float:
    series = f'db_replica_read_failures_total{{replica="{name}"}} '
    scrape = (await client.get("/metrics")).text
    return sum(float(line[len(series) :]) for line in scrape.splitlines() if line.startswith(series))


async def _listed(client: AsyncClient, customer_id: int) -> bool:
    return (await client.get(f"/api/view-loans/{customer_id}")).status_code == 200


def test_the_servers_are_ours(engines: tuple[Server, Server], tmp_path: Path) -> None:
    primary, replica = engines
    assert len({primary.port, replica.port, 5432}) == 3


async def test_a_server_that_is_not_a_standby_gets_no_reads() -> None:
    """A promoted ex-replica (here: the primary itself named as a replica) has its own history: no reads."""
    async with migrated_database("credit_not_standby") as url:
        settings = live_settings(url, database_replica_urls=url, db_pool_size=2)
        await _not_a_standby(settings)


async def _not_a_standby(settings: Any) -> None:
    async with live_client(settings) as (app, client):
        report = await replica_report(client)
        assert report["state"] == "not_standby", report
        assert app.state.replicas.pick() is None
        customer_id = (await register(client))["customer_id"]
        assert (await client.get(f"/api/view-loans/{customer_id}")).status_code == 200


@pytest.mark.parametrize(
    ("sqlstate", "primary_answers", "replica_out"),
    [
        ("57P03", True, True),  # cannot connect now: starting up
        ("57P01", True, True),  # admin shutdown
        ("08006", True, True),  # connection failure
        ("53300", True, True),  # too many connections
        ("40001", True, False),  # cancelled for a conflict with recovery: the replica itself is fine
        ("57014", False, False),  # statement timeout: the primary would time out too
        ("22P02", False, False),  # bad input: the same error anywhere
    ],
)
def test_which_replica_failures_the_primary_answers(
    sqlstate: str, primary_answers: bool, replica_out: bool
) -> None:
    class DriverError(Exception):
        pass

    driver_error = DriverError("from the replica")
    driver_error.sqlstate = sqlstate  # type: ignore[attr-defined]
    error = DBAPIError("SELECT 1", (), driver_error)
    assert _replica_may_fail(error) is primary_answers
    assert _replica_out(error) is replica_out
    assert _replica_may_fail(ConnectionRefusedError()) and _replica_out(ConnectionRefusedError())
