"""A committed database and an app on its real engine, for tests that need what the per-test rollback
harness cannot give: several real connections at once (locks, races, a request still in flight), data
that other connections see, and connections that can be killed.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import make_url

from app.config import Settings
from app.main import create_app
from tests.conftest import FIXED_NOW, REDIS_URL, migrated_database
from tests.engines import PgBouncer

_phones = itertools.count(8_100_000_000 + (uuid.uuid4().int % 10_000) * 10_000)


def asyncpg_dsn(url: str) -> str:
    """The same database as a plain libpq URL, for asyncpg connections the app knows nothing about."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# Set for the whole session by `pytest --through-pgbouncer` (tests/conftest.py): the live app then reaches
# its database through this PgBouncer, in transaction pooling mode.
POOLER: PgBouncer | None = None


def live_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url if POOLER is None else POOLER.url(database_url),
        "db_transaction_pooler": POOLER is not None,
        "redis_url": REDIS_URL,
        "arq_queue_name": f"credit-approval-test:{uuid.uuid4().hex[:8]}",
        "api_keys": "",
        "log_level": "WARNING",
        # One connection per concurrent request: the tests race real transactions, not a pool queue.
        "db_pool_size": 30,
        "db_max_overflow": 0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def live_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """The app as it runs in production (lifespan, engine, pool), behind an in-process HTTP client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app.state.clock = lambda: FIXED_NOW
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield app, client


@asynccontextmanager
async def live_app(prefix: str) -> AsyncIterator[tuple[str, FastAPI, AsyncClient]]:
    """A committed throw-away database and the production-shaped app on it."""
    async with migrated_database(prefix) as url, live_client(live_settings(url)) as (app, client):
        yield url, app, client


def register_body(monthly_income: int = 50_000, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "first_name": "Asha",
        "last_name": "Rao",
        "age": 30,
        "monthly_income": monthly_income,
        "phone_number": next(_phones),
    }
    body.update(overrides)
    return body


async def register(client: AsyncClient, monthly_income: int = 50_000, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/api/register", json=register_body(monthly_income, **overrides))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(database_url))


async def borrow(client: AsyncClient, customer_id: int, amount: int = 10_000, rate: int = 12) -> int:
    """create-loan for the customer over 12 months; the new loan's id."""
    response = await client.post(
        "/api/create-loan",
        json={"customer_id": customer_id, "loan_amount": amount, "interest_rate": rate, "tenure": 12},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["loan_id"])
