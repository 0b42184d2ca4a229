"""app.db.Reader, the driver-level road of the hot reads, must fail like SQLAlchemy does and never leak
or reuse a broken connection: its speed is only worth having if nothing else can tell it apart."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import bindparam, literal_column, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import Settings
from app.db import Reader, Statement, create_engine
from app.errors import is_connection_error, sqlstate_of

pytestmark = pytest.mark.asyncio

ECHO = Statement.compile(select(bindparam("value", type_=None).label("value")))
DIVIDE = Statement.compile(text("SELECT 1 / :zero AS boom").bindparams(bindparam("zero", type_=None)))
SLEEP = Statement.compile(text("SELECT pg_sleep(5)"))
PID = Statement.compile(select(literal_column("pg_backend_pid()").label("pid")))


def checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined,no-any-return]


async def test_statement_compiles_to_asyncpg_placeholders_in_order() -> None:
    statement = Statement.compile(text("SELECT :b, :a, :b").bindparams(bindparam("a"), bindparam("b")))
    assert statement.sql == "SELECT $1, $2, $1"
    assert statement.arguments({"a": 1, "b": 2}) == (2, 1)


async def test_a_read_returns_the_rows_and_gives_the_connection_back(pooled: AsyncEngine) -> None:
    reader = Reader(pooled)
    assert (await reader.fetchrow(ECHO, value="x"))["value"] == "x"  # type: ignore[index]
    assert await reader.fetchrow(Statement.compile(text("SELECT 1 WHERE false"))) is None
    assert checked_out(pooled) == 0


async def test_a_failing_statement_is_a_dbapi_error_and_the_connection_stays(pooled: AsyncEngine) -> None:
    reader = Reader(pooled)
    before = (await reader.fetchrow(PID))["pid"]  # type: ignore[index]

    with pytest.raises(DBAPIError) as raised:
        await reader.fetch(DIVIDE, zero=0)

    assert sqlstate_of(raised.value) == "22012"  # division_by_zero
    assert not raised.value.connection_invalidated and not is_connection_error(raised.value)
    assert "[parameters" not in str(raised.value)  # hide_parameters, as the engine does
    assert checked_out(pooled) == 0
    assert (await reader.fetchrow(PID))["pid"] == before  # type: ignore[index]


async def test_a_lost_connection_is_replaced_and_the_read_sent_again(
    pooled: AsyncEngine, engine: AsyncEngine
) -> None:
    reader = Reader(pooled)
    victim = (await reader.fetchrow(PID))["pid"]  # type: ignore[index]
    async with engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})

    # The read is answered, on a new connection.
    assert (await reader.fetchrow(PID))["pid"] != victim  # type: ignore[index]
    assert checked_out(pooled) == 0


async def test_a_read_that_loses_its_connection_twice_fails_as_a_lost_connection(
    pooled: AsyncEngine, engine: AsyncEngine
) -> None:
    reader = Reader(pooled)
    async with engine.connect() as admin:
        # Each attempt's backend is terminated while the statement runs (autocommit: pg_stat_activity is
        # read afresh each time, not from one transaction's snapshot).
        await admin.execution_options(isolation_level="AUTOCOMMIT")
        killer = asyncio.create_task(_terminate_sleepers(admin, count=2))
        with pytest.raises(DBAPIError) as raised:
            await reader.fetch(SLEEP)
        await killer

    assert raised.value.connection_invalidated and is_connection_error(raised.value)
    assert checked_out(pooled) == 0
    assert (await reader.fetchrow(ECHO, value="x")) is not None


async def _terminate_sleepers(admin: AsyncConnection, count: int) -> None:
    killed = 0
    while killed < count:
        await asyncio.sleep(0.1)
        result = await admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid() AND state = 'active'"
            )
        )
        killed += len(result.all())


async def test_a_cancelled_read_does_not_return_a_busy_connection(pooled: AsyncEngine) -> None:
    reader = Reader(pooled)
    before = (await reader.fetchrow(PID))["pid"]  # type: ignore[index]
    task = asyncio.create_task(reader.fetch(SLEEP))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert checked_out(pooled) == 0
    after = await asyncio.wait_for(reader.fetchrow(PID), timeout=2)
    assert after["pid"] != before  # type: ignore[index]


async def test_a_failed_checkout_is_a_dbapi_error(settings: Settings) -> None:
    url = settings.database_url.replace("postgres@", "no_such_role@", 1)
    broken = create_engine(settings.model_copy(update={"database_url": url}))
    try:
        with pytest.raises(DBAPIError) as raised:
            await Reader(broken).fetch(ECHO, value="x")
        assert sqlstate_of(raised.value) == "28000"  # invalid_authorization_specification
    finally:
        await broken.dispose()


async def test_inside_a_transaction_it_reads_that_transaction(connection: AsyncConnection) -> None:
    await connection.execute(text("CREATE TEMPORARY TABLE reader_probe (n int) ON COMMIT DROP"))
    await connection.execute(text("INSERT INTO reader_probe VALUES (7)"))
    row = await Reader(connection).fetchrow(Statement.compile(text("SELECT n FROM reader_probe")))
    assert row is not None and row["n"] == 7


async def test_waiting_reads_are_served_first_come_first_served(settings: Settings) -> None:
    """Sixteen readers in a loop on two connections all make progress together. Through the pool's own
    queue, newcomers overtook woken waiters: one reader finished all its reads before the others had done
    a single one (second-long tails under load)."""
    engine = create_engine(settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 0}))
    reader = Reader(engine)
    one = Statement.compile(text("SELECT 1"))
    done = [0] * 16
    when_first_finished: list[int] = []

    async def loop(index: int) -> None:
        for _ in range(30):
            await reader.fetch(one)
            done[index] += 1
        if not when_first_finished:
            when_first_finished.extend(done)

    try:
        await asyncio.gather(*(loop(index) for index in range(16)))
    finally:
        await engine.dispose()

    assert min(when_first_finished) >= 25, when_first_finished
