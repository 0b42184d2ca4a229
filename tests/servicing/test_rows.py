"""A statement's installment rows: the C extension writes exactly what the Python reference writes."""

from __future__ import annotations

import datetime as dt
import shutil
import sysconfig
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.credit.schedule import all_due_date_texts, rate_ratio
from app.servicing import rows as rows_module
from app.servicing.rows import ACCELERATED, python_rows, rows

OVERDUE = ',"status":"overdue","paid_on":null}'
UPCOMING = ',"status":"upcoming","paid_on":null}'
needs_extension = pytest.mark.skipif(not ACCELERATED, reason="the C extension was not built (no compiler)")


def test_the_extension_is_built_where_a_c_compiler_is() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here: the Python rows serve")
    assert ACCELERATED, "pip install built no app/servicing/_rows extension although a C compiler is here"


@needs_extension
@settings(max_examples=400, deadline=None)
@given(
    balance=st.integers(min_value=0, max_value=10**13),
    rate=st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=4),
    tenure=st.integers(min_value=1, max_value=600),
    emi_share=st.fractions(min_value=0, max_value=2),
    data=st.data(),
    start=st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2090, 12, 31)),
)
def test_c_and_python_write_the_same_rows(
    balance: int, rate: Decimal, tenure: int, emi_share: Fraction, data: st.DataObject, start: dt.date
) -> None:
    first = data.draw(st.integers(min_value=1, max_value=tenure))
    last = data.draw(st.integers(min_value=first - 1, max_value=tenure + 3))
    split = data.draw(st.integers(min_value=0, max_value=tenure + 2))
    emi = int(balance * emi_share) // max(1, tenure - first + 1)
    numerator, denominator = rate_ratio(rate)
    due_dates = all_due_date_texts(start, tenure)
    arguments = (balance, numerator, denominator, emi, first, last, tenure, due_dates, split)
    assert rows(*arguments, OVERDUE, UPCOMING) == python_rows(*arguments, OVERDUE, UPCOMING)


@needs_extension
def test_a_30_year_schedule_is_the_same_text_and_ends_at_zero() -> None:
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 360)
    arguments = (300_000_000, 19, 2400, 2_522_573, 6, 360, 360, due_dates, 20, OVERDUE, UPCOMING)
    text, count = rows(*arguments)
    assert (text, count) == python_rows(*arguments) and count == 355
    assert text.startswith('{"number":6,"due_date":"2026-07-31","amount":25225.73,"principal":1475.73,')
    assert text.endswith('"balance_after":0.00,"status":"upcoming","paid_on":null}')
    assert text.count('"status":"overdue"') == 14  # installments 6..19


def test_figures_beyond_64_bits_fall_back_to_python() -> None:
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 12)
    huge = 10**25  # cents: no 64-bit integer holds it
    arguments = (huge, 1, 100, huge // 10, 1, 12, 12, due_dates, 0, OVERDUE, UPCOMING)
    text, count = rows(*arguments)
    assert (text, count) == python_rows(*arguments) and count == 11
    assert text.startswith(f'{{"number":1,"due_date":"2026-02-28","amount":{huge // 1000}.00,')


@needs_extension
def test_the_extension_refuses_what_it_cannot_write_instead_of_reading_past_the_end() -> None:
    compiled = rows_module._COMPILED
    assert compiled is not None
    short = all_due_date_texts(dt.date(2026, 1, 31), 3)
    with pytest.raises(IndexError):
        compiled(1_000_00, 0, 1200, 10_00, 1, 12, 12, short, 0, OVERDUE, UPCOMING)
    with pytest.raises(TypeError):
        compiled(1_000_00, 0, 1200, 10_00, 1, 1, 12, ("2026-02-28é",), 0, OVERDUE, UPCOMING)
    with pytest.raises(OverflowError):
        compiled(-1, 0, 1200, 10_00, 1, 1, 12, short, 0, OVERDUE, UPCOMING)
    with pytest.raises(ZeroDivisionError):
        compiled(1_000_00, 0, 0, 10_00, 1, 1, 12, short, 0, OVERDUE, UPCOMING)
