"""A statement's installment rows as JSON text: the unpaid ones stepped with app.credit.schedule's
arithmetic and written in one pass, the paid ones written from their payments (packed by PostgreSQL as
PAYMENT, below).

Two implementations of each function. `python_rows` and `python_paid` are the reference: `steps`, then an
f-string per row. The C ones (app/servicing/_rows.c, built by `pip install` where a C compiler is present)
write the same text in a few microseconds where Python took ~330 µs of a 360-installment statement's CPU,
and ~0.08 µs per payment; tests/servicing/test_rows.py holds each pair to the same text. Where the
extension was not built, or a figure is beyond its 64-bit range (it raises OverflowError), Python answers:
the same document, more CPU.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from app.credit.schedule import steps

# A payment as the statement's query packs it (app/servicing/queries.py), big-endian as PostgreSQL's
# int4send and int8send write: installment_number, payment_id, paid_on's ordinal (date.toordinal()),
# interest and principal in cents, on_time. Its amount is the interest plus the principal (the payments
# table's CHECK parts_add_up). The C extension reads the same layout (PAYMENT_SIZE in _rows.c).
PAYMENT = struct.Struct(">iqiqqB")
RowsFunction = Callable[[int, int, int, int, int, int, int, tuple[str, ...], int, str, str], tuple[str, int]]
PaidFunction = Callable[[bytes, int, int, tuple[str, ...], str, str], tuple[str, str]]
P = ParamSpec("P")
R = TypeVar("R")

# The two digits after the point of a figure in cents: a lookup, not a format, per figure.
_CENTS = tuple(f"{c:02d}" for c in range(100))


def python_rows(
    balance: int,
    numerator: int,
    denominator: int,
    emi: int,
    first: int,
    last: int,
    tenure: int,
    due_dates: Sequence[str],
    split: int,
    before: str,
    after: str,
) -> tuple[str, int]:
    """Installments `first`..`last` stepped from `balance` with `emi` at the rate numerator/denominator
    (app.credit.schedule.steps), as JSON objects joined by commas, each ending with `before` when its
    number is below `split`, else `after`; and how many there are. Figures are cents, never negative."""
    run = steps(balance, (numerator, denominator), emi, first=first, tenure=tenure, last=last)
    # One comprehension, no call per row.
    text = ",".join(
        [
            f'{{"number":{number},"due_date":"{due_dates[number - 1]}",'
            f'"amount":{(amount := interest + principal) // 100}.{_CENTS[amount % 100]},'
            f'"principal":{principal // 100}.{_CENTS[principal % 100]},'
            f'"interest":{interest // 100}.{_CENTS[interest % 100]},'
            f'"balance_after":{left // 100}.{_CENTS[left % 100]}{before if number < split else after}'
            for number, interest, principal, left in run
        ]
    )
    return text, len(run)


def figure(cents: int) -> str:
    """A whole number of cents, never negative, as a JSON number with two decimals."""
    return f"{cents // 100}.{_CENTS[cents % 100]}"


def payment_count(payments: bytes) -> int:
    """How many payments `payments` (packed as PAYMENT) holds."""
    return len(payments) // PAYMENT.size


def python_paid(
    payments: bytes, first: int, outstanding: int, due_dates: Sequence[str], on_time: str, late: str
) -> tuple[str, str]:
    """The paid installments' rows (status `on_time` or `late`) and the payments' entries, each list's items
    joined by commas. `payments` are packed as PAYMENT, in any order, and must be installments
    first..first + count - 1, once each (ValueError otherwise); `outstanding` (cents) is what is owed after
    the last of them, so the balance after each is that plus the principal of the ones after it."""
    if len(payments) % PAYMENT.size:
        raise ValueError("the payments are not whole packed payments")
    placed: list[tuple[int, int, int, int, int, int] | None] = [None] * payment_count(payments)
    balance = outstanding
    for payment in PAYMENT.iter_unpack(payments):
        number, payment_id, _, interest_cents, principal_cents, flag = payment
        if min(payment_id, interest_cents, principal_cents) < 0 or flag > 1:
            raise ValueError("a payment's figures are negative or its on_time not 0 or 1")
        index = number - first
        if number < 1 or not 0 <= index < len(placed) or placed[index] is not None:
            raise ValueError("the payments are not installments first.. once each")
        placed[index] = payment
        balance += principal_cents
    installments, entries = [], []
    for place in placed:
        assert place is not None  # every place is filled: count numbers, none twice
        number, payment_id, ordinal, interest_cents, principal_cents, flag = place
        balance -= principal_cents
        paid_on = dt.date.fromordinal(ordinal).isoformat()
        amount, interest, principal = (
            figure(interest_cents + principal_cents),
            figure(interest_cents),
            figure(principal_cents),
        )
        installments.append(
            f'{{"number":{number},"due_date":"{due_dates[number - 1]}","amount":{amount},'
            f'"principal":{principal},"interest":{interest},"balance_after":{figure(balance)},'
            f'"status":"{on_time if flag else late}","paid_on":"{paid_on}"}}'
        )
        entries.append(
            f'{{"payment_id":{payment_id},"paid_on":"{paid_on}","amount":{amount},'
            f'"interest":{interest},"principal":{principal},"installment_number":{number},'
            f'"on_time":{"true" if flag else "false"}}}'
        )
    return ",".join(installments), ",".join(entries)


def _compiled() -> tuple[RowsFunction, PaidFunction] | None:
    try:
        from app.servicing._rows import paid as compiled_paid
        from app.servicing._rows import rows as compiled_rows
    except ImportError:  # not built: no C compiler where the package was installed
        return None
    return compiled_rows, compiled_paid


def _in_c_or_python(compiled: Callable[P, R] | None, reference: Callable[P, R]) -> Callable[P, R]:
    """`compiled` where it was built, and `reference` for the figures it cannot hold."""
    if compiled is None:
        return reference

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return compiled(*args, **kwargs)
        except OverflowError:  # beyond 64-bit cents: Python's integers have no bound
            return reference(*args, **kwargs)

    return call


_COMPILED = _compiled()
ACCELERATED = _COMPILED is not None  # the bench reports which one ran
rows: RowsFunction = _in_c_or_python(_COMPILED[0] if _COMPILED else None, python_rows)
paid: PaidFunction = _in_c_or_python(_COMPILED[1] if _COMPILED else None, python_paid)
