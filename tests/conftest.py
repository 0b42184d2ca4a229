"""Shared fixtures: a throw-away PostgreSQL database built by the Alembic migrations, and per-test
isolation through a transaction that is rolled back (sessions join it with savepoints).

TEST_DATABASE_URL is an admin URL (it may CREATE DATABASE); TEST_REDIS_URL a Redis for ARQ.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings, normalise_database_url
from app.db import create_engine
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = normalise_database_url(
    os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FIXED_NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


def _alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


def run_migrations(url: str, revision: str = "head") -> None:
    command.upgrade(_alembic_config(url), revision)


def downgrade_to(url: str, revision: str) -> None:
    command.downgrade(_alembic_config(url), revision)


async def create_database(name: str) -> str:
    """Create an empty database next to the admin URL's and return its URL."""
    admin = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_database(name: str) -> None:
    admin = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


async def create_migrated_database(prefix: str = "credit_test") -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = await create_database(name)
    # env.py runs its own event loop; keep it off ours.
    await asyncio.to_thread(run_migrations, url)
    return name, url


@asynccontextmanager
async def migrated_database(prefix: str = "credit_test") -> AsyncIterator[str]:
    """A throw-away database built by the migrations, dropped afterwards whatever happens in between."""
    name, url = await create_migrated_database(prefix)
    try:
        yield url
    finally:
        await drop_database(name)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        arq_queue_name=f"credit-approval-test:{uuid.uuid4().hex[:8]}",
        api_keys="",
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pooled(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds one connection: what waits for it, and in which order, shows."""
    engine = create_engine(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is always rolled back: nothing a test writes survives it."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def now() -> dt.datetime:
    return FIXED_NOW


@pytest.fixture
async def app(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], now: dt.datetime
) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app.state.sessionmaker = sessionmaker
        app.state.clock = lambda: now
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
def make_customer(client: AsyncClient) -> Callable[..., object]:
    """Register a customer through the API and return the JSON body."""
    counter = iter(range(10**9))

    async def _make(monthly_income: int | str = 50_000, **overrides: object) -> dict[str, object]:
        body = {
            "first_name": "Asha",
            "last_name": "Rao",
            "age": 30,
            "monthly_income": monthly_income,
            "phone_number": 9_000_000_000 + next(counter) + (uuid.uuid4().int % 900_000) * 1000,
        }
        body.update(overrides)
        response = await client.post("/api/register", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    return _make


# --- the second pass through PgBouncer (issue #15) -------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--through-pgbouncer",
        action="store_true",
        help="Run only the live tests (marked `live`), with the app reaching PostgreSQL through a real "
        "PgBouncer in transaction pooling mode, started for the session on a spare port.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--through-pgbouncer"):
        return
    deselected = [item for item in items if item.get_closest_marker("live") is None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("live") is not None]


@pytest.fixture(scope="session", autouse=True)
def through_pgbouncer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    if not request.config.getoption("--through-pgbouncer"):
        yield
        return
    from tests import live
    from tests.engines import start_pgbouncer

    bouncer = start_pgbouncer(ADMIN_URL, tmp_path_factory.mktemp("pgbouncer"))
    live.POOLER = bouncer
    try:
        yield
    finally:
        live.POOLER = None
        bouncer.stop()
