"""Request-scoped dependencies: the unit of work and the injectable clock."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import unit_of_work


def get_today(request: Request) -> dt.date:
    """Today's UTC date from the app's clock (tests pin it through app.state.clock)."""
    return request.app.state.clock().astimezone(dt.UTC).date()


SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]
TodayDep = Annotated[dt.date, Depends(get_today)]
