"""Loan rules: eligibility, creation and reads. Decisions come from the pure credit policy."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.credit import policy
from app.credit.dates import add_months
from app.credit.policy import CreditProfile, Decision, LoanRequest, Policy
from app.credit.schedule import installments_left
from app.credit.statement import loan_status
from app.db import Reader
from app.decisions import queries as decision_queries
from app.errors import ImportInProgress, InstallmentTooSmall, NotFound
from app.loans import queries
from app.loans.schemas import (
    CreateLoanOut,
    EligibilityOut,
    LoanCustomerOut,
    LoanDetailOut,
    LoanRequestIn,
    LoanStatus,
    LoanSummaryOut,
    ScoreBreakdownOut,
)


def _customer_not_found(customer_id: int) -> NotFound:
    return NotFound(f"Customer {customer_id} does not exist.", field="customer_id")


def _policy_request(data: LoanRequestIn) -> LoanRequest:
    return LoanRequest(loan_amount=data.loan_amount, interest_rate=data.interest_rate, tenure=data.tenure)


def _refuse_zero_installment(data: LoanRequestIn, decision: Decision) -> None:
    if decision.monthly_installment is not None and decision.monthly_installment == 0:
        raise InstallmentTooSmall(
            f"A loan of {data.loan_amount} over {data.tenure} months at {decision.corrected_interest_rate}% "
            "has a monthly installment that rounds to 0.00; lend more or over fewer months.",
            field="loan_amount",
        )


def _eligibility(customer_id: int, data: LoanRequestIn, decision: Decision) -> EligibilityOut:
    breakdown = decision.breakdown
    return EligibilityOut(
        customer_id=customer_id,
        approval=decision.approved,
        interest_rate=decision.interest_rate,
        corrected_interest_rate=decision.corrected_interest_rate,
        tenure=data.tenure,
        monthly_installment=decision.monthly_installment,
        credit_score=decision.credit_score,
        reasons=list(decision.reasons),
        score_breakdown=ScoreBreakdownOut(
            payment_history=breakdown.payment_history,
            utilisation=breakdown.utilisation,
            track_record=breakdown.track_record,
            recent_activity=breakdown.recent_activity,
        ),
    )


async def check_eligibility(
    db: Reader, data: LoanRequestIn, today: dt.date, credit_policy: Policy
) -> EligibilityOut:
    """An inquiry, not an application: decided exactly as create-loan decides, and recorded nowhere."""
    profile = await queries.credit_profile(db, data.customer_id, today)
    if profile is None:
        raise _customer_not_found(data.customer_id)
    decision = policy.decide(profile, _policy_request(data), credit_policy)
    _refuse_zero_installment(data, decision)
    metrics.record_decision("check_eligibility", decision)
    return _eligibility(data.customer_id, data, decision)


async def create_loan(
    session: AsyncSession,
    data: LoanRequestIn,
    now: dt.datetime,
    credit_policy: Policy,
    request_id: str | None,
) -> CreateLoanOut:
    """Decide, and record the decision (approved or not) with its effect, in the request's transaction."""
    today = now.date()
    # Serialise decisions per customer: the row lock is held until the request's transaction ends,
    # so concurrent requests for one customer decide one after another on fresh data.
    locked = await queries.lock_customer(session, data.customer_id)
    if locked is None:
        raise _customer_not_found(data.customer_id)
    if not locked:
        # The import may be about to commit history for this customer: deciding now could approve a
        # loan that the limit or the EMI rule would refuse once it lands.
        raise ImportInProgress(
            f"An import that may change customer {data.customer_id}'s credit history is running; "
            "retry once it has finished.",
        )
    profile: CreditProfile | None = await queries.credit_profile(session, data.customer_id, today)
    assert profile is not None  # the row is locked: it cannot have disappeared
    request = _policy_request(data)
    decision = policy.decide(profile, request, credit_policy)
    _refuse_zero_installment(data, decision)
    metrics.record_decision("create_loan", decision)
    message = policy.describe(decision, credit_policy)
    record = (now, data.customer_id, request, profile, decision, credit_policy, request_id)
    if not decision.approved:
        decision_id = await decision_queries.record_rejection(session, *record)
        return CreateLoanOut(
            loan_id=None,
            customer_id=data.customer_id,
            loan_approved=False,
            message=message,
            monthly_installment=None,
            reasons=list(decision.reasons),
            decision_id=decision_id,
        )
    assert decision.corrected_interest_rate is not None and decision.monthly_installment is not None
    decision_id, loan_id = await decision_queries.record_approval(
        session,
        *record,
        start_date=today,
        end_date=add_months(today, data.tenure),
        repayments_left=installments_left(
            data.loan_amount,
            decision.corrected_interest_rate,
            decision.monthly_installment,
            first=1,
            tenure=data.tenure,
        ),
    )
    # Counted at insert: a later failure to commit answers 5xx and the counter overcounts by that loan.
    metrics.record_loan_created()
    return CreateLoanOut(
        loan_id=loan_id,
        customer_id=data.customer_id,
        loan_approved=True,
        message=message,
        monthly_installment=decision.monthly_installment,
        reasons=list(decision.reasons),
        decision_id=decision_id,
    )


async def get_loan(db: Reader, loan_id: int, today: dt.date) -> LoanDetailOut:
    row = await queries.loan_with_customer(db, loan_id)
    if row is None:
        raise NotFound(f"Loan {loan_id} does not exist.", field="loan_id")
    return LoanDetailOut(
        loan_id=row["loan_id"],
        customer=LoanCustomerOut(
            id=row["customer_id"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            phone_number=row["phone_number"],
            age=row["age"],
        ),
        loan_amount=row["loan_amount"],
        interest_rate=row["interest_rate"],
        monthly_installment=row["monthly_installment"],
        tenure=row["tenure"],
        outstanding_principal=row["outstanding_principal"],
        amount_paid=row["amount_paid"],
        loan_status=loan_status(
            row["start_date"], row["installments_paid"], row["paid_off_on"] is not None, today
        ),
    )


_STATUS_FILTER = {LoanStatus.current: True, LoanStatus.closed: False, LoanStatus.all: None}


async def list_loans(
    db: Reader, customer_id: int, status: LoanStatus, today: dt.date
) -> list[LoanSummaryOut]:
    rows = await queries.customer_loans(db, customer_id, today, current=_STATUS_FILTER[status])
    if not rows:
        raise _customer_not_found(customer_id)
    return [
        LoanSummaryOut(
            loan_id=row["loan_id"],
            loan_amount=row["loan_amount"],
            interest_rate=row["interest_rate"],
            monthly_installment=row["monthly_installment"],
            repayments_left=row["repayments_left"],
            amount_paid=row["amount_paid"],
            loan_status=loan_status(
                row["start_date"], row["installments_paid"], row["paid_off_on"] is not None, today
            ),
        )
        for row in rows
        if row["loan_id"] is not None
    ]
