"""Servicing rules: make-payment and view-statement. The arithmetic is app.credit.schedule's; this module
loads and stores the state it works on and turns refusals into domain errors."""

from __future__ import annotations

import datetime as dt

from asyncpg import Record
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.credit import schedule
from app.credit.schedule import LoanState, PaymentRefused, Refusal
from app.credit.statement import loan_status, statement
from app.db import Reader
from app.errors import ImportInProgress, InvalidRequest, LoanPaidOff, NotFound, PaymentNotAccepted
from app.servicing import queries
from app.servicing.rows import payment_count
from app.servicing.schemas import PaymentIn, PaymentOut
from app.servicing.statement_json import statement_json


def _loan_not_found(customer_id: int, loan_id: int) -> NotFound:
    return NotFound(f"Customer {customer_id} has no loan {loan_id}.", field="loan_id")


def _state(row: Record | RowMapping) -> LoanState:
    return LoanState(
        loan_amount=row["loan_amount"],
        annual_rate=row["interest_rate"],
        tenure=row["tenure"],
        start_date=row["start_date"],
        outstanding=row["outstanding_principal"],
        installments_paid=row["installments_paid"],
        monthly_installment=row["monthly_installment"],
    )


def _check_paid_on(paid_on: dt.date, row: RowMapping, today: dt.date) -> None:
    if paid_on > today:
        raise InvalidRequest(f"paid_on {paid_on} is in the future (today is {today}).", field="paid_on")
    if paid_on < row["start_date"]:
        raise InvalidRequest(
            f"paid_on {paid_on} is before the loan started ({row['start_date']}).", field="paid_on"
        )
    latest = row["last_paid_on"]
    if latest is not None and paid_on < latest:
        raise InvalidRequest(
            f"paid_on {paid_on} is before the loan's latest payment ({latest}).", field="paid_on"
        )


def _not_accepted(refused: PaymentRefused, number: int) -> PaymentNotAccepted:
    figure = float(refused.amount)
    if refused.refusal is Refusal.BELOW_INTEREST:
        return PaymentNotAccepted(
            f"Installment {number} takes at least its interest, {refused.amount}.",
            field="amount",
            minimum_amount=figure,
        )
    if refused.refusal is Refusal.ABOVE_PAYOFF:
        return PaymentNotAccepted(
            f"The most installment {number} takes is the payoff, {refused.amount}.",
            field="amount",
            payoff_amount=figure,
        )
    return PaymentNotAccepted(
        f"Installment {number} is the last one: it takes exactly the payoff, {refused.amount}.",
        field="amount",
        payoff_amount=figure,
    )


async def make_payment(
    session: AsyncSession, customer_id: int, loan_id: int, data: PaymentIn, today: dt.date
) -> PaymentOut:
    row = await queries.lock_loan(session, customer_id, loan_id)
    if row is None:
        raise _loan_not_found(customer_id, loan_id)
    if not row["clear"]:
        raise ImportInProgress(
            f"An import that may change loan {loan_id} is running; retry once it has finished.",
        )
    if row["loan_amount"] is None:  # deleted while we waited for its lock
        raise _loan_not_found(customer_id, loan_id)
    state = _state(row)
    if state.paid_off:
        raise LoanPaidOff(f"Loan {loan_id} is paid off: nothing is owed.", field="loan_id")
    paid_on = data.paid_on or today
    _check_paid_on(paid_on, row, today)
    try:
        payment = schedule.apply_payment(state, data.amount, paid_on)
    except PaymentRefused as refused:
        raise _not_accepted(refused, state.next_number) from None
    after = payment.after
    repayments_left = after.repayments_left
    payment_id = await queries.record_payment(
        session,
        loan_id=loan_id,
        installment_number=payment.installment_number,
        paid_on=paid_on,
        amount=payment.amount,
        interest=payment.interest,
        principal=payment.principal,
        on_time=payment.on_time,
        outstanding=after.outstanding,
        monthly_installment=after.monthly_installment,
        repayments_left=repayments_left,
    )
    metrics.record_payment(on_time=payment.on_time, paid_off=after.paid_off)
    return PaymentOut(
        payment_id=payment_id,
        customer_id=customer_id,
        loan_id=loan_id,
        installment_number=payment.installment_number,
        amount=payment.amount,
        interest=payment.interest,
        principal=payment.principal,
        paid_on=paid_on,
        on_time=payment.on_time,
        outstanding_principal=after.outstanding,
        monthly_installment=after.monthly_installment,
        repayments_left=repayments_left,
        loan_status=loan_status(after.start_date, after.installments_paid, after.paid_off, today),
    )


async def view_statement(db: Reader, customer_id: int, loan_id: int, today: dt.date) -> bytes:
    """The statement as JSON (see app.servicing.statement_json): the document StatementOut describes."""
    row = await queries.loan_statement(db, customer_id, loan_id)
    if row is None:
        raise _loan_not_found(customer_id, loan_id)
    state = _state(row)
    payments = row["payments"] or b""
    result = statement(state, payment_count(payments), today)
    return statement_json(
        customer_id, loan_id, state, row["amount_paid"], row["repayments_left"], result, payments
    )
