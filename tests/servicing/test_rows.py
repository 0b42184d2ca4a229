"""A statement's installment rows: the C extension writes exactly what the Python reference writes."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sysconfig
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.credit.schedule import all_due_date_texts, rate_ratio
from app.servicing import rows as rows_module
from app.servicing.rows import ACCELERATED, PAYMENT, paid, payment_count, python_paid, python_rows, rows

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


def packed(*payments: tuple[int, int, dt.date, int, int, bool]) -> bytes:
    """Payments (installment_number, payment_id, paid_on, interest, principal, on_time) packed as the
    statement's query packs them."""
    return b"".join(
        PAYMENT.pack(number, payment_id, paid_on.toordinal(), interest, principal, on_time)
        for number, payment_id, paid_on, interest, principal, on_time in payments
    )


@st.composite
def paid_payments(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """Packed payments of installments first..first + n - 1 in any order (as the query's string_agg has
    them), the first number, and what is owed after the last."""
    count = draw(st.integers(min_value=0, max_value=30))
    first = draw(st.integers(min_value=1, max_value=600 - count))
    figures = st.integers(min_value=0, max_value=10**15)
    payments = [
        (
            first + k,
            draw(st.integers(min_value=1, max_value=2**62)),
            draw(st.dates(min_value=dt.date(1, 1, 1))),
            draw(figures),
            draw(figures),
            draw(st.booleans()),
        )
        for k in range(count)
    ]
    return packed(*draw(st.permutations(payments))), first, draw(figures)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(paid_payments())
def test_c_and_python_write_the_same_paid_rows(drawn: tuple[bytes, int, int]) -> None:
    payments, first, outstanding = drawn
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 600)
    written = paid(payments, first, outstanding, due_dates, "paid_on_time", "paid_late")
    assert written == python_paid(payments, first, outstanding, due_dates, "paid_on_time", "paid_late")
    rows_written = json.loads(f"[{written[0]}]")
    assert [row["number"] for row in rows_written] == list(range(first, first + payment_count(payments)))


def test_the_paid_rows_are_in_installment_order_with_each_balance_after() -> None:
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 12)
    payments = packed(
        (2, 8, dt.date(2026, 3, 30), 9_00, 91_00, False), (1, 7, dt.date(2026, 2, 27), 10_00, 90_00, True)
    )
    for function in (paid, python_paid):
        installments, entries = function(payments, 1, 800_00, due_dates, "paid_on_time", "paid_late")
        assert installments == (
            '{"number":1,"due_date":"2026-02-28","amount":100.00,"principal":90.00,"interest":10.00,'
            '"balance_after":891.00,"status":"paid_on_time","paid_on":"2026-02-27"},'
            '{"number":2,"due_date":"2026-03-31","amount":100.00,"principal":91.00,"interest":9.00,'
            '"balance_after":800.00,"status":"paid_late","paid_on":"2026-03-30"}'
        )
        assert entries == (
            '{"payment_id":7,"paid_on":"2026-02-27","amount":100.00,"interest":10.00,"principal":90.00,'
            '"installment_number":1,"on_time":true},'
            '{"payment_id":8,"paid_on":"2026-03-30","amount":100.00,"interest":9.00,"principal":91.00,'
            '"installment_number":2,"on_time":false}'
        )


@pytest.mark.parametrize(
    "numbers",
    [[1, 1], [2, 3], [1, 3], [0, 1]],
    ids=["twice", "after the last", "a gap", "before the first"],
)
def test_the_paid_rows_refuse_payments_that_are_not_each_installment_once(numbers: list[int]) -> None:
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 12)
    payments = packed(*[(number, number, dt.date(2026, 2, 27), 0, 1, True) for number in numbers])
    for function in (paid, python_paid):
        with pytest.raises(ValueError, match="once each"):
            function(payments, 1, 0, due_dates, "a", "b")


def test_paid_figures_beyond_64_bits_fall_back_to_python() -> None:
    """The C rows refuse figures from 2^61 cents (OverflowError): Python writes them."""
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 12)
    payments = packed((1, 7, dt.date(2026, 2, 27), 2**61, 2**62, True))
    written = paid(payments, 1, 0, due_dates, "paid_on_time", "paid_late")
    assert written == python_paid(payments, 1, 0, due_dates, "paid_on_time", "paid_late")
    assert written[1] == (
        '{"payment_id":7,"paid_on":"2026-02-27","amount":69175290276410818.56,'
        '"interest":23058430092136939.52,"principal":46116860184273879.04,"installment_number":1,"on_time":true}'
    )


@needs_extension
def test_the_paid_rows_refuse_what_they_cannot_write() -> None:
    assert rows_module._COMPILED is not None
    compiled = rows_module._COMPILED[1]
    due_dates = all_due_date_texts(dt.date(2026, 1, 31), 3)
    good = (1, 1, dt.date(2026, 2, 27), 10, 90, True)
    assert compiled(packed(good), 1, 0, due_dates, "a", "b")[0].endswith(
        '"status":"a","paid_on":"2026-02-27"}'
    )
    last_day = packed((1, 1, dt.date.max, 10, 90, True))
    assert compiled(last_day, 1, 0, due_dates, "a", "b")[1].startswith(
        '{"payment_id":1,"paid_on":"9999-12-31"'
    )
    with pytest.raises(IndexError):
        compiled(packed((4, *good[1:])), 4, 0, due_dates, "a", "b")  # type: ignore[arg-type]
    beyond_dates = PAYMENT.pack(1, 1, dt.date.max.toordinal() + 1, 10, 90, 1)
    with pytest.raises(ValueError):  # as date.fromordinal refuses it
        compiled(beyond_dates, 1, 0, due_dates, "a", "b")
    for bad in (PAYMENT.pack(1, 1, 740_000, 10, 90, 2), PAYMENT.pack(1, 1, 740_000, -10, 90, 1)):
        for function in (compiled, python_paid):
            with pytest.raises(ValueError):
                function(bad, 1, 0, due_dates, "a", "b")
    with pytest.raises(ValueError):  # not whole payments
        compiled(packed(good)[:-1], 1, 0, due_dates, "a", "b")
    with pytest.raises(TypeError):
        compiled(bytearray(packed(good)), 1, 0, due_dates, "a", "b")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        compiled(packed(good), 1, -1, due_dates, "a", "b")
