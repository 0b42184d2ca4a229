"""A statement's installment rows as JSON text: stepped with app.credit.schedule's arithmetic and written
in one pass.

Two implementations of one function. `python_rows` is the reference: `steps`, then an f-string per row.
The C one (app/servicing/_rows.c, built by `pip install` where a C compiler is present) does the same in
a few microseconds where Python takes ~330 µs of a 360-installment statement's CPU; tests/servicing/
test_rows.py holds the two to the same text. Where the extension was not built, or a figure is beyond its
64-bit range (it raises OverflowError), the Python one answers: same document, more CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from app.credit.schedule import steps

RowsFunction = Callable[[int, int, int, int, int, int, int, tuple[str, ...], int, str, str], tuple[str, int]]

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


def _compiled() -> RowsFunction | None:
    try:
        from app.servicing._rows import rows as compiled
    except ImportError:  # not built: no C compiler where the package was installed
        return None
    return compiled


_COMPILED = _compiled()
ACCELERATED = _COMPILED is not None  # the bench reports which one ran


def rows(
    balance: int,
    numerator: int,
    denominator: int,
    emi: int,
    first: int,
    last: int,
    tenure: int,
    due_dates: tuple[str, ...],
    split: int,
    before: str,
    after: str,
) -> tuple[str, int]:
    """`python_rows`, in C where it was built and the figures fit it."""
    if _COMPILED is not None:
        try:
            return _COMPILED(
                balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after
            )
        except OverflowError:
            pass  # beyond 64-bit cents: Python's integers have no bound
    return python_rows(
        balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after
    )
