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
from app.credit.statement import PaymentRecord
from app.servicing import rows as rows_module
from app.servicing.rows import ACCELERATED, paid, python_paid, python_rows, rows

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


@needs_extension
@pytest.mark.parametrize("numerator", [2, 12, 9999, 2**31 - 1])
def test_rows_either_side_of_the_64_bit_product_are_the_same_text(numerator: int) -> None:
    # C steps with 64-bit arithmetic while 2 x balance x numerator + denominator fits, 128-bit beyond.
    denominator = 1200
    limit = (2**63 - 1 - denominator) // 2 // numerator
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 12)
    for balance in (limit - 1, limit, limit + 1):
        if balance > (2**63 - 1) // 4:
            continue  # beyond the accelerated range: OverflowError, covered below
        arguments = (balance, numerator, denominator, balance // 13, 1, 12, 12, due_dates, 3)
        assert rows(*arguments, OVERDUE, UPCOMING) == python_rows(*arguments, OVERDUE, UPCOMING)


def test_figures_beyond_64_bits_fall_back_to_python() -> None:
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 12)
    huge = 10**25  # cents: no 64-bit integer holds it
    arguments = (huge, 1, 100, huge // 10, 1, 12, 12, due_dates, 0, OVERDUE, UPCOMING)
    text, count = rows(*arguments)
    assert (text, count) == python_rows(*arguments) and count == 11
    assert text.startswith(f'{{"number":1,"due_date":"2026-02-28","amount":{huge // 1000}.00,')


@needs_extension
def test_the_extension_refuses_what_it_cannot_write_instead_of_reading_past_the_end() -> None:
    assert rows_module._COMPILED is not None
    compiled = rows_module._COMPILED[0]
    short = all_due_date_texts(dt.date(2026, 1, 31), 3)
    with pytest.raises(IndexError):
        compiled(1_000_00, 0, 1200, 10_00, 1, 12, 12, short, 0, OVERDUE, UPCOMING)
    with pytest.raises(TypeError):
        compiled(1_000_00, 0, 1200, 10_00, 1, 1, 12, ("2026-02-28é",), 0, OVERDUE, UPCOMING)
    with pytest.raises(OverflowError):
        compiled(-1, 0, 1200, 10_00, 1, 1, 12, short, 0, OVERDUE, UPCOMING)
    with pytest.raises(ZeroDivisionError):
        compiled(1_000_00, 0, 0, 10_00, 1, 1, 12, short, 0, OVERDUE, UPCOMING)


payments = st.builds(
    PaymentRecord,
    payment_id=st.integers(min_value=1, max_value=2**62),
    installment_number=st.integers(min_value=1, max_value=600),
    paid_on=st.dates(min_value=dt.date(1, 1, 1)),
    interest_cents=st.integers(min_value=0, max_value=10**15),
    principal_cents=st.integers(min_value=0, max_value=10**15),
    on_time=st.booleans(),
)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(payments, st.integers(min_value=0, max_value=10**15)), max_size=30))
def test_c_and_python_write_the_same_paid_rows(pairs: list[tuple[PaymentRecord, int]]) -> None:
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 600)
    assert paid(pairs, due_dates, "paid_on_time", "paid_late") == python_paid(
        pairs, due_dates, "paid_on_time", "paid_late"
    )


def test_paid_figures_beyond_64_bits_fall_back_to_python() -> None:
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 12)
    record = PaymentRecord(7, 1, dt.date(2026, 2, 27), 10**24, 9 * 10**24, True)
    written = paid([(record, 0)], due_dates, "paid_on_time", "paid_late")
    assert written == python_paid([(record, 0)], due_dates, "paid_on_time", "paid_late")
    assert written[1] == (
        f'{{"payment_id":7,"paid_on":"2026-02-27","amount":{10**23}.00,"interest":{10**22}.00,'
        f'"principal":{9 * 10**22}.00,"installment_number":1,"on_time":true}}'
    )


@needs_extension
def test_the_paid_rows_refuse_what_they_cannot_write() -> None:
    assert rows_module._COMPILED is not None
    compiled = rows_module._COMPILED[1]
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 3)
    good = PaymentRecord(1, 1, dt.date(2026, 2, 27), 10, 90, True)
    assert compiled([(good, 0)], due_dates, "a", "b")[0].endswith('"status":"a","paid_on":"2026-02-27"}')
    with pytest.raises(IndexError):
        compiled([(good._replace(installment_number=4), 0)], due_dates, "a", "b")
    with pytest.raises(TypeError):
        compiled([(good._replace(paid_on="2026-02-27"), 0)], due_dates, "a", "b")
    with pytest.raises(TypeError):  # Python would write its time too
        compiled([(good._replace(paid_on=dt.datetime(2026, 2, 27, 12)), 0)], due_dates, "a", "b")
    with pytest.raises(TypeError):
        compiled([good], due_dates, "a", "b")
    with pytest.raises(OverflowError):
        compiled([(good, -1)], due_dates, "a", "b")
