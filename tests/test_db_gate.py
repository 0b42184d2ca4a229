"""The pool's gate (app.db): one first-come, first-served queue for every request that uses a pooled
connection, reads and units of work alike, bounded by DB_POOL_TIMEOUT_S. Against a real PostgreSQL, with
a pool of one connection so the order of the queue is the order of the work."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import Reader, Statement, _gate, create_engine, create_sessionmaker, unit_of_work

SELECT_ONE = Statement.compile(text("SELECT 1"))


def request_for(engine: AsyncEngine) -> Any:
    state = SimpleNamespace(sessionmaker=create_sessionmaker(engine))
    return SimpleNamespace(app=SimpleNamespace(state=state))


async def work(
    engine: AsyncEngine, name: str, done: list[str], hold: tuple[asyncio.Event, asyncio.Event] | None = None
) -> None:
    """A unit of work as a request runs it: its statement, then (with `hold`: set the first event, wait
    for the second) the commit."""
    units = unit_of_work(request_for(engine))
    session = await anext(units)
    await session.execute(text("SELECT 1"))
    done.append(name)
    if hold is not None:
        held, release = hold
        held.set()
        await release.wait()
    with pytest.raises(StopAsyncIteration):
        await anext(units)  # commits and gives the connection and its permit back


async def read(engine: AsyncEngine, name: str, done: list[str]) -> None:
    await Reader(engine).fetch(SELECT_ONE)
    done.append(name)


async def queued(*starts: Any) -> list[asyncio.Task[None]]:
    """Tasks started one after another, each already waiting before the next starts."""
    tasks = []
    for start in starts:
        tasks.append(asyncio.create_task(start))
        await asyncio.sleep(0.05)
    return tasks


async def test_reads_and_units_of_work_take_the_connection_in_the_order_they_asked(
    pooled: AsyncEngine,
) -> None:
    done: list[str] = []
    release = asyncio.Event()
    held = asyncio.Event()
    holder = asyncio.create_task(work(pooled, "holder", done, hold=(held, release)))
    await held.wait()
    # The unit of work holds the gate's only permit, so what comes next queues at the gate, in order, and
    # not in the pool's own wait, where a newcomer can take a connection just handed to a waiter.
    assert _gate(pooled).locked()
    waiting = await queued(
        work(pooled, "write 1", done),
        read(pooled, "read 1", done),
        work(pooled, "write 2", done),
        read(pooled, "read 2", done),
    )
    assert done == ["holder"]  # every one of them waits while the unit of work holds the connection
    release.set()
    await asyncio.gather(holder, *waiting)
    assert done == ["holder", "write 1", "read 1", "write 2", "read 2"]


async def test_a_read_waits_no_longer_than_the_pool_timeout(settings: Settings) -> None:
    engine = create_engine(
        settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_s": 0.3})
    )
    try:
        done: list[str] = []
        release = asyncio.Event()
        held = asyncio.Event()
        holder = asyncio.create_task(work(engine, "holder", done, hold=(held, release)))
        await held.wait()
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError):
            await read(engine, "read", done)
        with pytest.raises(PoolTimeoutError):
            await work(engine, "write", done)
        waited = time.monotonic() - started
        release.set()
        await holder
        assert 0.5 < waited < 2.0  # two waits of 0.3 s, not the holder's whole transaction
        await read(engine, "after", done)  # a timed-out waiter left no permit behind
        assert done == ["holder", "after"]
    finally:
        await engine.dispose()
