"""Run a request's whole unit of work again when PostgreSQL aborts it as a serialization failure (40001)
or a deadlock victim (40P01): the loser of such a race did nothing wrong, and a fresh attempt on fresh
data decides correctly. Bounded by ``settings.db_retry_attempts``; the last failure answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError

from app.db import unit_of_work
from app.errors import sqlstate_of
from app.fast_handlers import fast_handler

logger = logging.getLogger(__name__)

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# FastAPI keeps the exit stack of `Depends(..., scope="function")` dependencies here; the unit of work's
# commit runs when that stack closes.
_FUNCTION_STACK = "fastapi_function_astack"
_BACKOFF_S = 0.01


def _runs_unit_of_work(dependant: Dependant) -> bool:
    return any(sub.call is unit_of_work or _runs_unit_of_work(sub) for sub in dependant.dependencies)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and sqlstate_of(exc) in RETRYABLE_SQLSTATES


async def _run_once(
    handler: Callable[[Request], Coroutine[Any, Any, Response]], request: Request
) -> Response:
    """One attempt: the handler with a private function-scoped exit stack, closed before we return.

    FastAPI would close that stack only after the route handler returns, out of our reach; owning it
    puts the commit (and a 40001 raised by the commit) inside the attempt, so a retry repeats it all:
    a new session, a new transaction, the endpoint, the commit. The request body is cached by then,
    so it is read once.
    """
    scope = request.scope
    outer = scope.get(_FUNCTION_STACK)
    try:
        async with AsyncExitStack() as stack:
            scope[_FUNCTION_STACK] = stack
            response = await handler(request)
        return response
    finally:
        scope[_FUNCTION_STACK] = outer


class TransactionRetryRoute(APIRoute):
    """An APIRoute whose unit of work is retried on serialization failures and deadlocks."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not _runs_unit_of_work(self.dependant):
            # Nothing to retry (the single-statement reads of app.db.Reader cannot be a serialization
            # failure or a deadlock victim), and the wrapper's exit stack cost about 3% of a read. The
            # reads' own handler skips FastAPI's per-request generic work (app.fast_handlers).
            return fast_handler(self, handler) or handler

        async def retrying_handler(request: Request) -> Response:
            attempts: int = request.app.state.settings.db_retry_attempts
            for attempt in range(1, attempts + 1):
                try:
                    return await _run_once(handler, request)
                except DBAPIError as exc:
                    if attempt == attempts or not is_retryable(exc):
                        raise
                    logger.warning(
                        "transaction aborted (sqlstate %s), retrying: attempt %d of %d",
                        sqlstate_of(exc),
                        attempt + 1,
                        attempts,
                    )
                    # Jittered, growing pause so the contenders do not collide again in lockstep.
                    await asyncio.sleep(_BACKOFF_S * attempt * (1 + random.random()))
            raise AssertionError("unreachable")  # pragma: no cover

        return retrying_handler
