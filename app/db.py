"""Engine and session factories, the request's unit of work, and the Reader for single-statement reads.

Nothing here runs at import: the app's lifespan and the worker's on_startup call the factories.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
from fastapi import Request
from sqlalchemy import ClauseElement, event, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg as AsyncpgDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import Pool, QueuePool

from app.config import Settings

if TYPE_CHECKING:
    from app.replicas import Replicas


def create_engine(
    settings: Settings,
    *,
    pool_size: int | None = None,
    url: str | None = None,
    timeouts_per_transaction: bool = False,
) -> AsyncEngine:
    """An engine on the primary (DATABASE_URL), or on `url` (a replica) with the same settings.

    `timeouts_per_transaction`: behind a transaction pooler no timeout is sent at connect (the role's
    apply); an engine whose timeouts must differ from the role's (the worker's, sized for a million-row
    merge) sets them with SET LOCAL at the start of each transaction instead: one statement more each."""
    engine = create_async_engine(
        url or settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        # No pre-ping: it would add a round trip to every request. A connection that died with a
        # database restart fails its request with a 503 and is discarded by the pool.
        pool_pre_ping=False,
        pool_recycle=1800,
        # Errors are logged; their text must not carry statement parameters (phone numbers, names).
        hide_parameters=True,
        connect_args=_connect_args(settings),
    )
    if settings.db_transaction_pooler and timeouts_per_transaction:
        timeout = int(settings.db_statement_timeout_ms)

        @event.listens_for(engine.sync_engine, "begin")
        def _timeouts(connection: Any) -> None:
            for name in ("statement_timeout", "lock_timeout"):
                connection.exec_driver_sql(f"SET LOCAL {name} = {timeout}")

    return engine


def _connect_args(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout_s,
        "command_timeout": max(settings.db_statement_timeout_ms / 1000 * 2, 5),
    }
    if not settings.db_transaction_pooler:
        args["server_settings"] = {
            "application_name": "credit-approval",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "lock_timeout": str(settings.db_statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(settings.db_statement_timeout_ms * 6),
        }
        return args
    # Behind a transaction pooler each transaction may run on a different server connection, so:
    # - no statement cache: asyncpg then sends each statement as the unnamed one, parsed and run in the
    #   same transaction (its named statements would be missing, or already exist, on the next server);
    # - SQLAlchemy's sessions prepare named statements inside their transaction. asyncpg numbers them per
    #   process, so two processes (API workers, the ARQ worker) would meet on a shared server connection
    #   with the same name ("already exists"): a random name each time, and no cache of them;
    # - PgBouncer refuses startup parameters it does not know, and would not keep them per client anyway:
    #   the timeouts come from ALTER ROLE ... SET (docs/scaling.md). application_name it does track.
    args["statement_cache_size"] = 0
    args["prepared_statement_cache_size"] = 0
    args["prepared_statement_name_func"] = _statement_name
    args["server_settings"] = {"application_name": "credit-approval"}
    return args


def _statement_name() -> str:
    return f"__credit_{uuid.uuid4().hex}__"


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent, rolled back on any error.

    Declared with ``Depends(unit_of_work, scope="function")`` so the commit runs when the endpoint
    returns, not after the response has gone out: a client never sees a 201 for a row that failed to commit.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    # The session holds a pooled connection from its first statement to its commit: it queues at the same
    # first-come, first-served gate as the reads (see _gate), or the pool's own wait would let newcomers
    # overtake it (make-payment's p99 was 6-12x its p50, with no lock waits in PostgreSQL).
    gate = await enter_gate(sessionmaker.kw["bind"])
    try:
        async with sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
    finally:
        gate.release()


@dataclass(frozen=True, slots=True)
class Statement:
    """A SQLAlchemy construct compiled once, at import, for asyncpg: the SQL ($1, $2... placeholders,
    exactly what SQLAlchemy itself would send) and the bound parameter behind each placeholder."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def compile(cls, construct: ClauseElement) -> Statement:
        compiled = construct.compile(dialect=_ASYNCPG)
        # positiontup: the documented order of a positional paramstyle's parameters (SQLCompiler).
        return cls(str(compiled), tuple(getattr(compiled, "positiontup", None) or ()))

    def arguments(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


_ASYNCPG = AsyncpgDialect()
# Failures after which the connection cannot be trusted again (a timeout is not one: asyncpg cancels the
# statement and the connection stays usable).
_LOST = (ConnectionError, asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError)


class Reader:
    """Single-statement reads sent straight to the asyncpg connection under SQLAlchemy's pool.

    Why: each hot read endpoint sends one SELECT, and through a Session the Python around it cost about
    three times the query (session and transaction bookkeeping, a greenlet per execute, result wrapping):
    more than everything else in the request. A Reader checks a connection out of the same pool, runs the
    statement on the driver in autocommit (one statement is atomic: no BEGIN/COMMIT round trips) and
    gives the connection back. Statements are compiled from the query modules' SQLAlchemy constructs.

    Bound to an engine it uses the pool, or a replica's (app.replicas: the next usable one, and the
    primary when a replica fails the read); bound to a connection or a session it reads inside that
    transaction, always on the primary (create-loan's unit of work after its row lock; the tests'
    rolled-back transaction).

    Failures look like SQLAlchemy's own: a ``DBAPIError`` whose ``orig`` is the driver's exception, with
    ``connection_invalidated`` set, and the connection dropped, when it was lost; so the problem+json
    handlers and the retry logic see no difference.
    """

    __slots__ = ("_bind", "_replicas")

    def __init__(
        self, bind: AsyncEngine | AsyncConnection | AsyncSession, replicas: Replicas | None = None
    ) -> None:
        self._bind = bind
        self._replicas = replicas

    async def fetch(self, statement: Statement, **values: Any) -> list[asyncpg.Record]:
        args = statement.arguments(values)
        bind = self._bind
        if isinstance(bind, AsyncEngine):
            replicas = self._replicas
            if replicas is not None and (replica := replicas.pick()) is not None:
                try:
                    return await _fetch_pooled(replica, statement.sql, args)
                except (DBAPIError, OSError) as error:
                    if not _replica_may_fail(error):
                        raise
                    replicas.read_failed(replica, error, out=_replica_out(error))
                    # Nobody sees a replica's failure: the primary answers the same statement.
            return await _fetch_pooled(bind, statement.sql, args)
        connection = await bind.connection() if isinstance(bind, AsyncSession) else bind
        fairy = await connection.get_raw_connection()
        try:
            return await _fetch(fairy.driver_connection, statement.sql, args)
        except DBAPIError as error:
            if error.connection_invalidated:
                _stale_pool(connection.sync_engine.pool, fairy, error.orig)
                await connection.invalidate(error.orig)
            raise

    async def fetchrow(self, statement: Statement, **values: Any) -> asyncpg.Record | None:
        rows = await self.fetch(statement, **values)
        return rows[0] if rows else None


# SQLSTATE classes of a replica that cannot serve now: connection exceptions (08), shutting down or
# starting up (57P01-57P03), out of connections or memory (53).
_OUT_STATES = ("08", "57P", "53")


def _sqlstate(error: BaseException) -> str:
    return str(getattr(getattr(error, "orig", None), "sqlstate", None) or "")


def _replica_out(error: BaseException) -> bool:
    """The replica itself is unreachable or unable to serve: out of rotation until a check finds it well."""
    if isinstance(error, OSError) or (isinstance(error, DBAPIError) and error.connection_invalidated):
        return True
    return _sqlstate(error).startswith(_OUT_STATES)


def _replica_may_fail(error: BaseException) -> bool:
    """Failures of a replica that the primary answers instead: the replica is out (above), or it cancelled
    the read for a conflict with recovery (SQLSTATE 40001 on a standby). Any other error (a timeout, a bad
    parameter) would happen on the primary too, and is raised."""
    return _replica_out(error) or _sqlstate(error) == "40001"


ReadsWith = Reader | AsyncEngine | AsyncConnection | AsyncSession


def as_reader(db: ReadsWith) -> Reader:
    """Query functions accept a Reader or anything one can be made from (a session, a connection)."""
    return db if isinstance(db, Reader) else Reader(db)


def _gate(bind: AsyncEngine | AsyncConnection) -> asyncio.Semaphore:
    """A first-come, first-served queue in front of the pool, one permit per connection it can hand out,
    taken by every request that uses one: a read (for one statement) or a unit of work (for its whole
    transaction).

    Why: the pool's own wait (an asyncio.Queue) lets a newcomer take a connection that was just handed
    to a waiter, which then queues again at the back: under load a few requests waited over a second
    while most waited milliseconds. asyncio.Semaphore hands a released permit to the oldest waiter.
    """
    pool = bind.sync_engine.pool
    gate = _GATES.get(pool)
    if gate is None:
        # A pool without a size (NullPool) opens a connection per checkout and needs no queue.
        size = sys.maxsize
        if isinstance(pool, QueuePool):
            overflow = pool._max_overflow  # no public accessor; -1 means unbounded
            size = sys.maxsize if overflow < 0 else pool.size() + overflow
        gate = _GATES[pool] = asyncio.Semaphore(size)
    return gate


_GATES: weakref.WeakKeyDictionary[Pool, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def enter_gate(bind: AsyncEngine | AsyncConnection) -> asyncio.Semaphore:
    """Wait for a permit of the pool's gate, at most the pool's timeout (DB_POOL_TIMEOUT_S), as the
    pool's own wait did: then sqlalchemy's TimeoutError (a 503). The caller releases the permit."""
    gate = _gate(bind)
    if not gate.locked():
        await gate.acquire()  # the common case: no queue, and no timer to set up
        return gate
    timeout = getattr(bind.sync_engine.pool, "_timeout", None)  # QueuePool's; NullPool never queues
    try:
        await asyncio.wait_for(gate.acquire(), timeout)
    except TimeoutError:
        raise PoolTimeoutError(f"no pooled connection free within {timeout:g} s") from None
    return gate


async def _fetch_pooled(engine: AsyncEngine, sql: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    gate = await enter_gate(engine)
    try:
        return await checkout_and_fetch(engine, sql, args)
    finally:
        gate.release()


async def checkout_and_fetch(engine: AsyncEngine, sql: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    dialect = engine.dialect
    for attempt in (1, 2):
        try:
            # The pool's checkout without a Connection around it: a third of engine.connect()'s cost.
            fairy = await engine.raw_connection()
        except dialect.loaded_dbapi.Error as error:
            # What engine.connect() raises for the same failure (refused or unreachable servers already
            # surface as OSError from both).
            raise DBAPIError.instance(
                None,
                None,
                error,
                dialect.loaded_dbapi.Error,
                hide_parameters=True,
                dialect=dialect,
                connection_invalidated=dialect.is_disconnect(error, None, None),
            ) from error
        try:
            return await _fetch(fairy.driver_connection, sql, args)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            _stale_pool(engine.sync_engine.pool, fairy, error.orig)
            if attempt == 2:
                raise
            # A pooled connection the server dropped (a restart, a failover): the pool is marked stale
            # now, and one statement in autocommit is safe to send again, once, on a new connection. So
            # a restart costs no request; a server still down fails the new connection at once.
        except BaseException:
            # Cancelled mid-statement: the connection may still be busy with it; do not hand it out again.
            fairy.invalidate()
            raise
        finally:
            fairy.close()  # back to the pool (after an invalidate, the pool replaces it)
    raise AssertionError("unreachable")


def _stale_pool(pool: Pool, fairy: Any, error: BaseException | None) -> None:
    """A lost connection means the server went away (a restart, a failover): invalidate this connection and
    mark every connection made before now stale, so each is replaced at its next checkout instead of failing
    one request each. It is what SQLAlchemy does itself on a disconnect in a Session; the Reader bypasses
    that handling, so it calls the same pool method."""
    pool._invalidate(fairy, error)


async def _fetch(driver: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> list[asyncpg.Record]:
    try:
        return await driver.fetch(sql, *args)
    except Exception as error:
        lost = isinstance(error, _LOST) or driver.is_closed()
        raise DBAPIError(sql, args, error, hide_parameters=True, connection_invalidated=lost) from error


async def get_reader(request: Request) -> Reader:
    """The request's Reader: over the pool (and the replicas, when there are any), or over the connection
    the app's sessionmaker is bound to.

    A plain (non-generator) dependency: nothing to clean up per request, so FastAPI sets up no exit stack
    and no shielded cancel scope for it.
    """
    state = request.app.state
    sessionmaker: async_sessionmaker[AsyncSession] = state.sessionmaker
    return Reader(sessionmaker.kw["bind"], state.replicas)


async def warn_without_timeouts(engine: AsyncEngine) -> None:
    """Behind a transaction pooler the app sends no statement_timeout (see _connect_args): say so at
    startup when the server has none for our role, rather than let a stuck query hold a pooled server
    connection for ever. Best effort: a database that is down is /ready's business."""
    try:
        async with engine.connect() as connection:
            value = (await connection.exec_driver_sql("SHOW statement_timeout")).scalar()
    except (DBAPIError, OSError):
        return
    if value == "0":
        logging.getLogger(__name__).warning(
            "DB_TRANSACTION_POOLER is on and the server sets no statement_timeout for this role: "
            "run ALTER ROLE <role> SET statement_timeout = '10s' (and lock_timeout, "
            "idle_in_transaction_session_timeout); docs/scaling.md"
        )


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
