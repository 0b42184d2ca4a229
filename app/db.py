"""Engine and session factories, and the request's unit of work.

Nothing here runs at import: the app's lifespan and the worker's on_startup call the factories.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        # No pre-ping: it would add a round trip to every request. A connection that died with a
        # database restart fails its request with a 503 and is discarded by the pool.
        pool_pre_ping=False,
        pool_recycle=1800,
        # Errors are logged; their text must not carry statement parameters (phone numbers, names).
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "command_timeout": max(settings.db_statement_timeout_ms / 1000 * 2, 5),
            "server_settings": {
                "application_name": "credit-approval",
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "lock_timeout": str(settings.db_statement_timeout_ms),
                "idle_in_transaction_session_timeout": str(settings.db_statement_timeout_ms * 6),
            },
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent, rolled back on any error.

    Declared with ``Depends(unit_of_work, scope="function")`` so the commit runs when the endpoint
    returns, not after the response has gone out: a client never sees a 201 for a row that failed to commit.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def read_only(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for a request that reads with a single statement: autocommit, no transaction.

    One statement is atomic on its own (it reads one snapshot), so the BEGIN and COMMIT that a unit of
    work wraps around it are two extra round trips that buy nothing; on the hot read paths they were
    two of the three. asyncpg in autocommit mode sends neither. A session whose sessionmaker is bound
    to a connection rather than an engine (the tests' outer transaction) is joining someone else's
    transaction and keeps its mode.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        if isinstance(session.bind, AsyncEngine):
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
