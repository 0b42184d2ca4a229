"""view-statement's JSON, written directly.

A 360-installment statement through pydantic models cost 5 ms of CPU (360 models built, validated and
serialised). Here the installments of each run are stepped and written in one pass by app.servicing.rows
(in C where it was built), and the few paid rows and payments are f-strings. The document is exactly what
StatementOut describes (its head still goes through the model); tests/servicing check every statement
against it. Figures are JSON numbers with two decimals (10200.66, 300.00).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from app.credit.statement import InstallmentStatus, PaymentRecord, Run, Statement
from app.servicing.rows import rows
from app.servicing.schemas import StatementHead

# What ends an unpaid installment's row, by its status.
_END = {status: f',"status":"{status.value}","paid_on":null}}' for status in InstallmentStatus}
_PAID_ON_TIME, _PAID_LATE = InstallmentStatus.PAID_ON_TIME.value, InstallmentStatus.PAID_LATE.value


def _run(result: Statement, run: Run, split: int, before: InstallmentStatus, after: InstallmentStatus) -> str:
    numerator, denominator = result.rate
    text, _ = rows(
        run.balance,
        numerator,
        denominator,
        run.emi,
        run.first,
        run.last,
        result.tenure,
        result.due_dates,
        split,
        _END[before],
        _END[after],
    )
    return text


def _paid(paid: list[tuple[PaymentRecord, Decimal]], due_dates: Sequence[str]) -> tuple[list[str], list[str]]:
    """Each API payment's installment row and its entry in `payments`: the same figures, formatted once."""
    installments, payments = [], []
    for payment, after in paid:
        number, paid_on = payment.installment_number, payment.paid_on.isoformat()
        amount, interest, principal = (
            _money(payment.amount),
            _money(payment.interest),
            _money(payment.principal),
        )
        installments.append(
            f'{{"number":{number},"due_date":"{due_dates[number - 1]}","amount":{amount},'
            f'"principal":{principal},"interest":{interest},"balance_after":{_money(after)},'
            f'"status":"{_PAID_ON_TIME if payment.on_time else _PAID_LATE}","paid_on":"{paid_on}"}}'
        )
        payments.append(
            f'{{"payment_id":{payment.payment_id},"paid_on":"{paid_on}","amount":{amount},'
            f'"interest":{interest},"principal":{principal},"installment_number":{number},'
            f'"on_time":{"true" if payment.on_time else "false"}}}'
        )
    return installments, payments


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"  # Decimal's own formatting: exact (amounts are whole cents)


def statement_json(head: StatementHead, result: Statement) -> bytes:
    on_time, overdue, upcoming = (
        InstallmentStatus.PAID_ON_TIME,
        InstallmentStatus.OVERDUE,
        InstallmentStatus.UPCOMING,
    )
    paid_rows, payments = _paid(result.paid, result.due_dates)
    installments = []
    if result.settled is not None:
        installments.append(_run(result, result.settled, 0, on_time, on_time))
    installments += paid_rows
    installments.append(_run(result, result.projected, result.overdue_before, overdue, upcoming))
    document = head.model_dump_json()
    return "".join(
        (
            document[:-1],  # the head's closing brace: the two lists follow
            ',"installments":[',
            ",".join([part for part in installments if part]),
            '],"payments":[',
            ",".join(payments),
            "]}",
        )
    ).encode()
