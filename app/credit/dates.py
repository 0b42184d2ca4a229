"""Calendar arithmetic the policy and the schedules share, exactly as PostgreSQL does it (the queries compute
the same figures in SQL). Pure: no I/O."""

from __future__ import annotations

import calendar
from datetime import date


def months_elapsed(start: date, today: date) -> int:
    """Whole calendar months from ``start`` to ``today``, exactly as PostgreSQL computes
    ``extract(year from age(today, start)) * 12 + extract(month from age(today, start))``.

    PostgreSQL subtracts the year/month/day fields and borrows one month when the day of ``today`` is
    smaller than the day of ``start`` (so 2024-01-31 -> 2024-02-29 is 0 and -> 2024-03-01 is 1).
    Never negative: 0 when ``today`` is before ``start``.
    """
    months = (today.year - start.year) * 12 + (today.month - start.month)
    if today.day < start.day:
        months -= 1
    return max(months, 0)


def add_months(d: date, n: int) -> date:
    """Calendar add of ``n`` months, clamping the day to the target month's last day
    (PostgreSQL ``date + interval 'n months'``)."""
    index = d.year * 12 + (d.month - 1) + n
    year, month0 = divmod(index, 12)
    month = month0 + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))
