"""The injectable clock: all 'today' decisions go through here so tests can pin the date."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def today(clock: Clock = utc_now) -> dt.date:
    return clock().date()
