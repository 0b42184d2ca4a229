"""Request-scoped dependencies: the unit of work, the reader for single-statement reads, the clock."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.policy import Policy
from app.db import Reader, get_reader, unit_of_work


async def get_today(request: Request) -> dt.date:
    """Today's UTC date from the app's clock (tests pin it through app.state.clock).

    `async` although it never awaits: FastAPI runs a plain `def` dependency in the thread pool, and that
    hop (a queue put, a thread wake-up, GIL hand-offs) cost more than the rest of a read request.
    """
    return request.app.state.clock().astimezone(dt.UTC).date()


async def get_now(request: Request) -> dt.datetime:
    """The app clock's current instant, in UTC."""
    now: dt.datetime = request.app.state.clock()
    return now.astimezone(dt.UTC)


async def get_policy(request: Request) -> Policy:
    """The credit policy the app loaded at startup (app.policy_file)."""
    policy: Policy = request.app.state.policy
    return policy


async def get_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]
# For endpoints that read with one statement and write nothing (see app.db.Reader).
ReaderDep = Annotated[Reader, Depends(get_reader)]
TodayDep = Annotated[dt.date, Depends(get_today)]
NowDep = Annotated[dt.datetime, Depends(get_now)]
PolicyDep = Annotated[Policy, Depends(get_policy)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
