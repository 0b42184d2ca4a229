"""Idempotency-Key on POST /api/create-loan and POST /api/register (IETF httpapi draft semantics)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.worker import Worker
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.config import Settings
from app.idempotency.jobs import purge_expired_idempotency_keys
from app.idempotency.service import fingerprint
from app.main import create_app
from tests.conftest import FIXED_NOW
from tests.live import connect, live_app, live_settings, register, register_body

pytestmark = [pytest.mark.asyncio, pytest.mark.live]

LOAN = {"loan_amount": 10_000, "interest_rate": 14, "tenure": 12}


def new_key() -> str:
    return str(uuid.uuid4())


async def count_loans(client: AsyncClient, customer_id: int) -> int:
    response = await client.get(f"/api/view-loans/{customer_id}", params={"status": "all"})
    assert response.status_code == 200, response.text
    return len(response.json())


async def test_a_retry_replays_the_first_response_and_creates_nothing(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    body = {"customer_id": customer["customer_id"], **LOAN}
    headers = {"Idempotency-Key": new_key()}

    first = await client.post("/api/create-loan", json=body, headers=headers)
    retry = await client.post("/api/create-loan", json=body, headers=headers)

    assert first.status_code == retry.status_code == 201, retry.text
    assert retry.content == first.content
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["content-type"] == "application/json"
    assert await count_loans(client, customer["customer_id"]) == 1


async def test_the_first_response_with_a_key_is_the_response_without_one(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    body = {"customer_id": customer["customer_id"], **LOAN}

    plain = await client.post("/api/create-loan", json=body)
    keyed = await client.post("/api/create-loan", json=body, headers={"Idempotency-Key": new_key()})

    assert plain.status_code == keyed.status_code == 201
    expected = {
        **plain.json(),
        "loan_id": keyed.json()["loan_id"],
        "decision_id": keyed.json()["decision_id"],
    }
    assert keyed.json() == expected


async def test_requests_without_a_key_are_not_deduplicated(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    body = {"customer_id": customer["customer_id"], **LOAN}

    responses = [await client.post("/api/create-loan", json=body) for _ in range(2)]

    assert [r.status_code for r in responses] == [201, 201]
    assert all("Idempotent-Replayed" not in r.headers for r in responses)
    assert await count_loans(client, customer["customer_id"]) == 2


async def test_a_retried_registration_replays_instead_of_conflicting(client: AsyncClient) -> None:
    body = register_body()
    headers = {"Idempotency-Key": new_key()}

    first = await client.post("/api/register", json=body, headers=headers)
    retry = await client.post("/api/register", json=body, headers=headers)
    without_key = await client.post("/api/register", json=body)

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert without_key.status_code == 409  # the customer exists once; only the keyed retry is replayed


async def test_the_same_key_with_another_body_is_rejected(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    headers = {"Idempotency-Key": new_key()}
    body = {"customer_id": customer["customer_id"], **LOAN}
    assert (await client.post("/api/create-loan", json=body, headers=headers)).status_code == 201

    other = await client.post("/api/create-loan", json={**body, "loan_amount": 20_000}, headers=headers)

    assert other.status_code == 422, other.text
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["field"] == "Idempotency-Key"
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert await count_loans(client, customer["customer_id"]) == 1


async def test_the_body_is_compared_as_json_not_as_bytes(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    headers = {"Idempotency-Key": new_key(), "Content-Type": "application/json"}
    compact = (
        f'{{"customer_id":{customer["customer_id"]},"loan_amount":10000,"interest_rate":14,"tenure":12}}'
    )
    reordered = (
        f'{{ "tenure": 12, "interest_rate": 14, "loan_amount": 10000, '
        f'"customer_id": {customer["customer_id"]} }}'
    )

    first = await client.post("/api/create-loan", content=compact, headers=headers)
    retry = await client.post("/api/create-loan", content=reordered, headers=headers)

    assert first.status_code == 201
    assert retry.headers.get("Idempotent-Replayed") == "true", retry.text
    assert fingerprint(compact.encode()) == fingerprint(reordered.encode())
    assert fingerprint(b"not json") != fingerprint(b"not  json")


async def test_a_quoted_key_is_the_same_key(client: AsyncClient, make_customer: Callable[..., Any]) -> None:
    customer = await make_customer()
    key = new_key()
    body = {"customer_id": customer["customer_id"], **LOAN}

    await client.post("/api/create-loan", json=body, headers={"Idempotency-Key": key})
    retry = await client.post("/api/create-loan", json=body, headers={"Idempotency-Key": f'"{key}"'})

    assert retry.headers.get("Idempotent-Replayed") == "true"


async def test_a_key_is_scoped_to_its_operation(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    key = new_key()
    registered = await client.post("/api/register", json=register_body(), headers={"Idempotency-Key": key})
    assert registered.status_code == 201
    body = {"customer_id": registered.json()["customer_id"], **LOAN}

    loan = await client.post("/api/create-loan", json=body, headers={"Idempotency-Key": key})

    assert loan.status_code == 201, loan.text
    assert "Idempotent-Replayed" not in loan.headers


async def test_a_rejection_is_replayed_as_it_was(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer(monthly_income=30_000)
    body = {"customer_id": customer["customer_id"], "loan_amount": 10**11, "interest_rate": 14, "tenure": 12}
    headers = {"Idempotency-Key": new_key()}

    first = await client.post("/api/create-loan", json=body, headers=headers)
    retry = await client.post("/api/create-loan", json=body, headers=headers)

    assert first.status_code == retry.status_code == 200
    assert retry.json()["loan_approved"] is False
    assert retry.headers["Idempotent-Replayed"] == "true"


async def test_an_error_stores_nothing_and_leaves_the_key_usable(
    client: AsyncClient, make_customer: Callable[..., Any]
) -> None:
    headers = {"Idempotency-Key": new_key()}
    missing = await client.post("/api/create-loan", json={"customer_id": 2**52, **LOAN}, headers=headers)
    assert missing.status_code == 404
    customer = await make_customer()

    # Not a 422 for "another body": the failed request left no record behind.
    created = await client.post(
        "/api/create-loan", json={"customer_id": customer["customer_id"], **LOAN}, headers=headers
    )

    assert created.status_code == 201, created.text
    assert "Idempotent-Replayed" not in created.headers


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "é"])
async def test_a_malformed_key_is_a_422(client: AsyncClient, key: str) -> None:
    response = await client.post(
        "/api/register", json=register_body(), headers={"Idempotency-Key": key.encode()}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_empty_quoted_key_is_a_422(client: AsyncClient) -> None:
    response = await client.post("/api/register", json=register_body(), headers={"Idempotency-Key": '""'})
    assert response.status_code == 422


async def test_an_expired_key_is_free_again(
    client: AsyncClient, connection: AsyncConnection, make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    body = {"customer_id": customer["customer_id"], **LOAN}
    headers = {"Idempotency-Key": new_key()}
    first = await client.post("/api/create-loan", json=body, headers=headers)
    expires_in = await connection.scalar(
        text("SELECT expires_at - created_at FROM idempotency_keys WHERE key = :key"),
        {"key": headers["Idempotency-Key"]},
    )
    assert expires_in.total_seconds() == 24 * 3600

    await connection.execute(
        text("UPDATE idempotency_keys SET expires_at = now() WHERE key = :key"),
        {"key": headers["Idempotency-Key"]},
    )
    again = await client.post("/api/create-loan", json=body, headers=headers)

    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["loan_id"] != first.json()["loan_id"]
    assert await count_loans(client, customer["customer_id"]) == 2
    # ... and the new response is the one replayed from now on.
    replay = await client.post("/api/create-loan", json=body, headers=headers)
    assert replay.json()["loan_id"] == again.json()["loan_id"]


async def test_keys_are_scoped_per_api_key(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], make_customer: Callable[..., Any]
) -> None:
    customer = await make_customer()
    app = create_app(settings.model_copy(update={"api_keys": "key-one,key-two"}))
    body = {"customer_id": customer["customer_id"], **LOAN}
    key = new_key()
    async with app.router.lifespan_context(app):
        app.state.sessionmaker = sessionmaker
        app.state.clock = lambda: FIXED_NOW
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:

            def post(api_key: str) -> Any:
                return client.post(
                    "/api/create-loan", json=body, headers={"Idempotency-Key": key, "X-API-Key": api_key}
                )

            one, two, one_again = await post("key-one"), await post("key-two"), await post("key-one")

    assert one.status_code == two.status_code == 201
    assert "Idempotent-Replayed" not in two.headers  # another client's key is another key
    assert one.json()["loan_id"] != two.json()["loan_id"]
    assert one_again.headers["Idempotent-Replayed"] == "true"
    assert one_again.json()["loan_id"] == one.json()["loan_id"]


# --------------------------------------------------------------------------------------- committed data


@pytest.fixture(scope="module")
async def live() -> AsyncIterator[tuple[str, FastAPI, AsyncClient]]:
    async with live_app("credit_idempotency") as running:
        yield running


async def test_a_retry_while_the_first_is_in_flight_is_a_409(live: tuple[str, FastAPI, AsyncClient]) -> None:
    url, _, client = live
    customer = await register(client)
    body = {"customer_id": customer["customer_id"], **LOAN}
    headers = {"Idempotency-Key": new_key()}
    # Hold the customer's row so the first request stops mid-flight (key claimed, loan not yet decided).
    holder = await connect(url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("SELECT 1 FROM customers WHERE customer_id = $1 FOR UPDATE", customer["customer_id"])
    try:
        first = asyncio.create_task(client.post("/api/create-loan", json=body, headers=headers))
        await asyncio.sleep(0.3)
        assert not first.done()
        started = time.perf_counter()
        retry = await client.post("/api/create-loan", json=body, headers=headers)
        elapsed = time.perf_counter() - started
    finally:
        await transaction.rollback()
        await holder.close()

    assert retry.status_code == 409, retry.text
    assert retry.headers["content-type"] == "application/problem+json"
    assert retry.json()["type"].endswith("/idempotency-key-in-flight")
    assert elapsed < 2, f"the in-flight check waited {elapsed:.2f}s instead of answering at once"
    first_response = await asyncio.wait_for(first, timeout=10)
    assert first_response.status_code == 201
    after = await client.post("/api/create-loan", json=body, headers=headers)
    assert after.headers["Idempotent-Replayed"] == "true"
    assert after.content == first_response.content
    assert await count_loans(client, customer["customer_id"]) == 1


async def test_parallel_retries_with_one_key_create_one_loan(live: tuple[str, FastAPI, AsyncClient]) -> None:
    _, _, client = live
    customer = await register(client)
    body = {"customer_id": customer["customer_id"], **LOAN}
    headers = {"Idempotency-Key": new_key()}

    responses = await asyncio.gather(
        *(client.post("/api/create-loan", json=body, headers=headers) for _ in range(24))
    )

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, [r.text for r in responses]
    created = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(created) == 1
    assert all(r.content == created[0].content for r in responses if r.status_code == 201)
    assert await count_loans(client, customer["customer_id"]) == 1


async def test_a_request_killed_mid_transaction_leaves_no_loan_and_a_usable_key(
    live: tuple[str, FastAPI, AsyncClient],
) -> None:
    """The loan is inserted, then the connection dies before commit: no half loan, and the key is free."""
    url, _, client = live
    customer = await register(client)
    body = {"customer_id": customer["customer_id"], **LOAN}
    key = new_key()
    # An uncommitted row with the same primary key makes the request wait at its last statement (storing
    # the response), after its loan INSERT: exactly the moment a crash would hurt most.
    blocker = await connect(url)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute(
        "INSERT INTO idempotency_keys (method_path, key, fingerprint, status_code, response_body, expires_at)"
        " VALUES ('POST /api/create-loan', $1, '', 0, '', now())",
        key,
    )
    killer = await connect(url)
    try:
        request = asyncio.create_task(
            client.post("/api/create-loan", json=body, headers={"Idempotency-Key": key})
        )
        pid = None
        for _ in range(100):
            pid = await killer.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'credit-approval'"
                " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO idempotency_keys%'"
            )
            if pid is not None:
                break
            await asyncio.sleep(0.05)
        assert pid is not None, "the request never reached the idempotency insert"
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        killed = await asyncio.wait_for(request, timeout=10)
    finally:
        await transaction.rollback()
        await blocker.close()
        await killer.close()

    assert killed.status_code == 503, killed.text
    assert killed.headers["content-type"] == "application/problem+json"
    assert await count_loans(client, customer["customer_id"]) == 0
    retried = await client.post("/api/create-loan", json=body, headers={"Idempotency-Key": key})
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert await count_loans(client, customer["customer_id"]) == 1


async def test_the_cron_job_purges_expired_keys_only(live: tuple[str, FastAPI, AsyncClient]) -> None:
    url, app, client = live
    customer = await register(client)
    body = {"customer_id": customer["customer_id"], **LOAN}
    expired, live_key = new_key(), new_key()
    for key in (expired, live_key):
        response = await client.post("/api/create-loan", json=body, headers={"Idempotency-Key": key})
        assert response.status_code == 201
    connection = await connect(url)
    try:
        await connection.execute(
            "UPDATE idempotency_keys SET expires_at = now() - interval '1 s' WHERE key = $1", expired
        )

        deleted = await purge_expired_idempotency_keys({"engine": app.state.engine})

        remaining = {row["key"] for row in await connection.fetch("SELECT key FROM idempotency_keys")}
    finally:
        await connection.close()
    assert deleted >= 1
    assert expired not in remaining
    assert live_key in remaining


async def test_the_cron_job_runs_without_an_engine_in_its_context(
    live: tuple[str, FastAPI, AsyncClient],
) -> None:
    url, _, _ = live
    assert await purge_expired_idempotency_keys({"settings": live_settings(url)}) >= 0


# ARQ's own shutdown calls redis-py's deprecated close(); nothing of ours.
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_the_worker_runs_the_purge_as_a_cron_job(live: tuple[str, FastAPI, AsyncClient]) -> None:
    """worker.WorkerSettings schedules the purge; a real ARQ worker (burst mode, real Redis) runs it."""
    import worker

    url, _, client = live
    customer = await register(client)
    key = new_key()
    body = {"customer_id": customer["customer_id"], **LOAN}
    assert (
        await client.post("/api/create-loan", json=body, headers={"Idempotency-Key": key})
    ).status_code == 201
    connection = await connect(url)
    try:
        await connection.execute(
            "UPDATE idempotency_keys SET expires_at = now() - interval '1 s' WHERE key = $1", key
        )
        jobs = [
            job for job in worker.WorkerSettings.cron_jobs if job.coroutine is purge_expired_idempotency_keys
        ]
        assert len(jobs) == 1
        settings = live_settings(url)
        arq_worker = Worker(
            functions=[],
            cron_jobs=[dataclasses.replace(jobs[0], run_at_startup=True, next_run=None)],
            redis_settings=RedisSettings.from_dsn(settings.redis_url),
            queue_name=settings.arq_queue_name,
            on_startup=worker.startup,
            on_shutdown=worker.shutdown,
            ctx={"settings": settings},
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        try:
            await asyncio.wait_for(arq_worker.main(), timeout=20)
        finally:
            await arq_worker.close()
        remaining = await connection.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key)
    finally:
        await connection.close()
    assert arq_worker.jobs_complete == 1
    assert remaining == 0


async def test_the_document_declares_the_key_and_the_replay_header(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, statuses in [("/api/register", ["201"]), ("/api/create-loan", ["201", "200"])]:
        operation = document["paths"][path]["post"]
        (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert parameter["in"] == "header" and not parameter.get("required", False)
        for status in statuses:
            assert "Idempotent-Replayed" in operation["responses"][status]["headers"], (path, status)
        assert "409" in operation["responses"] and "422" in operation["responses"]
    for path in ["/api/check-eligibility"]:
        assert "Idempotency-Key" not in str(document["paths"][path]["post"].get("parameters", []))
