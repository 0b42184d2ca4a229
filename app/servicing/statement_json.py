"""view-statement's JSON, written directly.

A 360-installment statement through pydantic models cost 5 ms of CPU (360 models built, validated and
serialised). Here app.servicing.rows writes the installments (in C where it was built): each run of
unpaid ones stepped and written in one pass, the paid ones and the payments from the payments. The
document is exactly what StatementOut describes (its head still goes through the model); tests/servicing
check every statement against it. Figures are JSON numbers with two decimals (10200.66, 300.00).
"""

from __future__ import annotations

from app.credit.statement import InstallmentStatus, Run, Statement
from app.servicing.rows import paid, rows
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


def statement_json(head: StatementHead, result: Statement) -> bytes:
    on_time, overdue, upcoming = (
        InstallmentStatus.PAID_ON_TIME,
        InstallmentStatus.OVERDUE,
        InstallmentStatus.UPCOMING,
    )
    paid_rows, payments = paid(result.paid, result.due_dates, _PAID_ON_TIME, _PAID_LATE)
    installments = []
    if result.settled is not None:
        installments.append(_run(result, result.settled, 0, on_time, on_time))
    installments.append(paid_rows)
    installments.append(_run(result, result.projected, result.overdue_before, overdue, upcoming))
    document = head.model_dump_json()
    return "".join(
        (
            document[:-1],  # the head's closing brace: the two lists follow
            ',"installments":[',
            ",".join([part for part in installments if part]),
            '],"payments":[',
            payments,
            "]}",
        )
    ).encode()
