"""A loan's statement: its whole schedule as paid and as projected, and where it stands today.

Pure: the caller passes the stored loan, its payments and `today`. The rules (issue #11):

- An installment is overdue when it is unpaid and its due date is before today (due today is not yet).
- days_past_due = today - the due date of the oldest overdue installment (0 when none); the class follows
  RBI's IRAC norms: standard (0), SMA-0 (1-30), SMA-1 (31-60), SMA-2 (61-90), NPA (over 90).
- A loan is paid_off once nothing is owed, overdue while an installment is overdue, active otherwise.
- Installments settled before any payment through the API (an imported loan's EMIs paid on time) are shown
  as the formula's schedule, paid on time on dates nobody knows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from itertools import islice

from app.credit.dates import add_months
from app.credit.policy import installment
from app.credit.schedule import LoanState, cents, due_date_texts, rate_ratio, steps


class LoanStatus(StrEnum):
    ACTIVE = "active"
    OVERDUE = "overdue"
    PAID_OFF = "paid_off"


class InstallmentStatus(StrEnum):
    PAID_ON_TIME = "paid_on_time"
    PAID_LATE = "paid_late"
    OVERDUE = "overdue"
    UPCOMING = "upcoming"


class DelinquencyClass(StrEnum):
    STANDARD = "standard"
    SMA_0 = "SMA-0"
    SMA_1 = "SMA-1"
    SMA_2 = "SMA-2"
    NPA = "NPA"


def delinquency_class(days_past_due: int) -> DelinquencyClass:
    if days_past_due <= 0:
        return DelinquencyClass.STANDARD
    if days_past_due <= 30:
        return DelinquencyClass.SMA_0
    if days_past_due <= 60:
        return DelinquencyClass.SMA_1
    if days_past_due <= 90:
        return DelinquencyClass.SMA_2
    return DelinquencyClass.NPA


def days_past_due(start_date: dt.date, installments_paid: int, paid_off: bool, today: dt.date) -> int:
    """Days since the oldest unpaid installment fell due (installments are settled in order, so it is
    the next one); 0 when it is not overdue or nothing is owed."""
    if paid_off:
        return 0
    return max((today - add_months(start_date, installments_paid + 1)).days, 0)


def loan_status(start_date: dt.date, installments_paid: int, paid_off: bool, today: dt.date) -> LoanStatus:
    if paid_off:
        return LoanStatus.PAID_OFF
    if days_past_due(start_date, installments_paid, paid_off, today) > 0:
        return LoanStatus.OVERDUE
    return LoanStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    payment_id: int
    installment_number: int
    paid_on: dt.date
    amount: Decimal
    interest: Decimal
    principal: Decimal
    on_time: bool


# One installment of a statement, as it is rendered: (number, due date, amount, principal, interest,
# balance after, status, paid on). A plain tuple, built up to 600 times per statement: figures in cents,
# the due date as ISO text (which orders as the dates do), the status as its value.
Line = tuple[int, str, int, int, int, int, str, dt.date | None]


@dataclass(frozen=True, slots=True)
class Statement:
    lines: list[Line]
    days_past_due: int
    delinquency_class: DelinquencyClass
    loan_status: LoanStatus
    next_installment: Line | None  # the next unpaid one, which may be overdue
    payoff_amount: Decimal


def statement(state: LoanState, payments: list[PaymentRecord], today: dt.date) -> Statement:
    """`state` is the loan as stored (after every payment); `payments` its API payments, oldest first."""
    rate = rate_ratio(state.annual_rate)
    start, tenure = state.start_date, state.tenure
    settled_before = state.installments_paid - len(payments)  # imported: the first ones, dates unknown
    lines: list[Line] = []
    if settled_before:
        formula_emi = cents(installment(state.loan_amount, state.annual_rate, tenure))
        formula = steps(cents(state.loan_amount), rate, formula_emi, first=1, tenure=tenure)
        lines += [
            (number, due, interest + principal, principal, interest, after, _PAID_ON_TIME, None)
            for (number, interest, principal, after), due in zip(
                islice(formula, settled_before), due_date_texts(start, 1, settled_before), strict=True
            )
        ]
    # Each payment's balance after: what is owed now plus the principal of the payments after it.
    balance = cents(state.outstanding) + sum(cents(p.principal) for p in payments)
    for p in payments:
        principal = cents(p.principal)
        balance -= principal
        lines.append(
            (
                p.installment_number,
                add_months(start, p.installment_number).isoformat(),
                cents(p.amount),
                principal,
                cents(p.interest),
                balance,
                _PAID_ON_TIME if p.on_time else _PAID_LATE,
                p.paid_on,
            )
        )
    first = state.installments_paid + 1
    projected = steps(
        cents(state.outstanding), rate, cents(state.monthly_installment), first=first, tenure=tenure
    )
    unpaid = len(lines)
    today_text = today.isoformat()
    # strict=False: the projection may end before the tenure (rounding, or an EMI above the formula's).
    lines += [
        (
            number,
            due,
            interest + principal,
            principal,
            interest,
            after,
            _OVERDUE if due < today_text else _UPCOMING,
            None,
        )
        for (number, interest, principal, after), due in zip(
            projected, due_date_texts(start, first, tenure), strict=False
        )
    ]
    dpd = days_past_due(start, state.installments_paid, state.paid_off, today)
    return Statement(
        lines=lines,
        days_past_due=dpd,
        delinquency_class=delinquency_class(dpd),
        loan_status=loan_status(start, state.installments_paid, state.paid_off, today),
        next_installment=lines[unpaid] if unpaid < len(lines) else None,
        payoff_amount=state.payoff,
    )


_PAID_ON_TIME, _PAID_LATE = InstallmentStatus.PAID_ON_TIME.value, InstallmentStatus.PAID_LATE.value
_OVERDUE, _UPCOMING = InstallmentStatus.OVERDUE.value, InstallmentStatus.UPCOMING.value
