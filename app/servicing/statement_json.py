"""view-statement's JSON, written directly.

A 360-installment statement through pydantic models cost 5 ms of CPU (360 models built, validated and
serialised). Here app.servicing.rows writes the installments (in C where it was built): each run of
unpaid ones stepped and written in one pass, the paid ones and the payments from the payments as the
query packs them. The document is exactly what StatementOut describes; tests/servicing check every
statement against it. Its head is written here too: through StatementHead (built, validated, dumped) it
cost 9 µs of the 30 the Python around the rows took. Figures are JSON numbers with two decimals
(10200.66, 300.00). The document is 60-120 KiB: app.malloc keeps the API's processes from faulting its
buffers' pages in on every request.
"""

from __future__ import annotations

from decimal import Decimal

from app.credit.schedule import LoanState
from app.credit.statement import InstallmentStatus, Run, Statement
from app.servicing.rows import figure, paid, rows

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


def _money(value: Decimal) -> str:
    """A stored figure (2 decimal places) as a JSON number with two decimals."""
    return f"{value:.2f}"


def _next_installment(following: tuple[str, int] | None) -> str:
    """The head's next_due_date and next_installment members (null when paid off)."""
    if following is None:
        return '"next_due_date":null,"next_installment":null'
    due, amount = following
    return f'"next_due_date":"{due}","next_installment":{{"due_date":"{due}","amount":{figure(amount)}}}'


def statement_json(
    customer_id: int,
    loan_id: int,
    loan: LoanState,
    amount_paid: Decimal,
    repayments_left: int,
    result: Statement,
    payments: bytes,
) -> bytes:
    """The statement of `loan` (as stored, with its amount paid and repayments left) worked out as
    `result`, with its API payments (packed as app.servicing.rows.PAYMENT, any order), as the JSON document
    StatementOut describes."""
    on_time, overdue, upcoming = (
        InstallmentStatus.PAID_ON_TIME,
        InstallmentStatus.OVERDUE,
        InstallmentStatus.UPCOMING,
    )
    paid_rows, entries = paid(
        payments, result.paid_first, result.projected.balance, result.due_dates, _PAID_ON_TIME, _PAID_LATE
    )
    installments = []
    if result.settled is not None:
        installments.append(_run(result, result.settled, 0, on_time, on_time))
    installments.append(paid_rows)
    installments.append(_run(result, result.projected, result.overdue_before, overdue, upcoming))
    # StatementHead's fields, in its order; then the two lists.
    head = (
        f'{{"customer_id":{customer_id},"loan_id":{loan_id},"principal":{_money(loan.loan_amount)},'
        f'"interest_rate":{_money(loan.annual_rate)},"amount_paid":{_money(amount_paid)},'
        f'"monthly_installment":{_money(loan.monthly_installment)},"repayments_left":{repayments_left},'
        f'"outstanding_principal":{_money(loan.outstanding)},"loan_status":"{result.loan_status.value}",'
        f'"days_past_due":{result.days_past_due},"delinquency_class":"{result.delinquency_class.value}",'
        f'{_next_installment(result.next_installment)},"payoff_amount":{_money(result.payoff_amount)}'
    )
    return "".join(
        (
            head,
            ',"installments":[',
            ",".join([part for part in installments if part]),
            '],"payments":[',
            entries,
            "]}",
        )
    ).encode()
