"""A loan's statement: its whole schedule as paid and as projected, and where it stands today.

Pure: the caller passes the stored loan, how many API payments it has and `today`. The rules (issue #11):

- An installment is overdue when it is unpaid and its due date is before today (due today is not yet).
- days_past_due = today - the due date of the oldest overdue installment (0 when none); the class follows
  RBI's IRAC norms: standard (0), SMA-0 (1-30), SMA-1 (31-60), SMA-2 (61-90), NPA (over 90).
- A loan is paid_off once nothing is owed, overdue while an installment is overdue, active otherwise.
- Installments settled before any payment through the API (an imported loan's EMIs paid on time) are shown
  as the formula's schedule, paid on time on dates nobody knows.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from app.credit.dates import add_months
from app.credit.policy import installment
from app.credit.schedule import LoanState, all_due_date_texts, cents, money, rate_ratio, steps


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
    return status_of(paid_off, days_past_due(start_date, installments_paid, paid_off, today))


def status_of(paid_off: bool, days_past_due: int) -> LoanStatus:
    if paid_off:
        return LoanStatus.PAID_OFF
    if days_past_due > 0:
        return LoanStatus.OVERDUE
    return LoanStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class Run:
    """Installments `first`..`last` of a schedule, stepped from `balance` with `emi` (both in cents):
    app.credit.schedule.steps' arguments. A statement keeps its runs this way rather than as one object
    per installment: it has up to 600 and is read far more often than anything else servicing does, so
    the renderer (app.servicing.rows) steps and writes them in one pass."""

    balance: int
    emi: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Statement:
    """A loan's schedule in three runs, in installment order, and where it stands today."""

    rate: tuple[int, int]  # the monthly rate as an exact ratio (app.credit.schedule.rate_ratio)
    tenure: int
    due_dates: tuple[str, ...]  # installment k's due date, ISO text, at [k - 1]
    settled: Run | None  # an imported loan's first installments: the formula's, paid on time, dates unknown
    paid_first: int  # the first installment paid through the API (they run up to the last one paid)
    projected: Run  # the unpaid installments, projected with the EMI in force (none when paid off)
    overdue_before: int  # unpaid installments numbered below this are overdue
    next_installment: tuple[str, int] | None  # the next unpaid one (maybe overdue): due date, cents
    days_past_due: int
    delinquency_class: DelinquencyClass
    loan_status: LoanStatus
    payoff_amount: Decimal


def statement(state: LoanState, api_payments: int, today: dt.date) -> Statement:
    """`state` is the loan as stored (after every payment); `api_payments` how many it had through the API.
    They settled its last installments paid; the renderer writes them from the payments themselves, the
    balance after each being what is owed now plus the principal of the ones after it."""
    rate = rate_ratio(state.annual_rate)
    tenure = state.tenure
    due_dates = all_due_date_texts(state.start_date, tenure)
    settled_before = state.installments_paid - api_payments  # imported: the first ones, dates unknown
    settled = None
    if settled_before:
        formula_emi = cents(installment(state.loan_amount, state.annual_rate, tenure))
        settled = Run(balance=cents(state.loan_amount), emi=formula_emi, first=1, last=settled_before)
    outstanding = cents(state.outstanding)
    first = state.installments_paid + 1
    projected = Run(balance=outstanding, emi=cents(state.monthly_installment), first=first, last=tenure)
    following = steps(projected.balance, rate, projected.emi, first=first, tenure=tenure, last=first)
    if following:  # its interest is the one the payoff adds (the same rounding, in cents)
        _, interest, principal, _ = following[0]
        next_installment: tuple[str, int] | None = due_dates[first - 1], interest + principal
        payoff_amount = money(projected.balance + interest)
    else:  # paid off
        next_installment, payoff_amount = None, state.payoff
    # Unpaid installments falling due before today are overdue; due dates only grow down the schedule.
    overdue_before = bisect_left(due_dates, today.isoformat(), state.installments_paid, tenure) + 1
    dpd = days_past_due(state.start_date, state.installments_paid, state.paid_off, today)
    return Statement(
        rate=rate,
        tenure=tenure,
        due_dates=due_dates,
        settled=settled,
        paid_first=settled_before + 1,
        projected=projected,
        overdue_before=overdue_before,
        next_installment=next_installment,
        days_past_due=dpd,
        delinquency_class=delinquency_class(dpd),
        loan_status=status_of(state.paid_off, dpd),
        payoff_amount=payoff_amount,
    )
