from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict

from app.credit.policy import Reason
from app.credit.schedule import MAX_TENURE
from app.credit.statement import LoanStatus as ServicingStatus
from app.schemas import (
    MAX_MONEY,
    CustomerId,
    DatabaseId,
    LoanId,
    Money,
    MoneyIn,
    PercentIn,
    Rate,
    WholeNumber,
)

LOAN_STATUS_DOC = (
    "`active`, `overdue` (an installment is unpaid past its due date) or `paid_off` (nothing is owed)."
)
REPAYMENTS_LEFT_DOC = (
    "Installments of the schedule not yet paid: tenure minus installments paid, fewer where the schedule "
    "ends early because rounding repays the balance sooner; 0 when paid off."
)

LOAN_REQUEST_EXAMPLE: dict[str, Any] = {
    "customer_id": 42,
    "loan_amount": 200000,
    "interest_rate": 10.5,
    "tenure": 24,
}
# create-loan's 200: what a rejection looks like (the 201 example is CreateLoanOut's own).
REJECTED_LOAN_EXAMPLE = {
    "loan_id": None,
    "customer_id": 42,
    "loan_approved": False,
    "message": "Loan not approved: total monthly installments would exceed 50% of monthly salary.",
    "monthly_installment": None,
    "reasons": ["emi_over_half_salary"],
    "decision_id": 5002,
}


class LoanRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [LOAN_REQUEST_EXAMPLE]})

    customer_id: CustomerId
    loan_amount: MoneyIn = Field(
        gt=0,
        le=MAX_MONEY,
        max_digits=14,
        decimal_places=2,
        description="Principal requested, a currency amount (> 0, at most 2 decimals).",
        examples=[200000],
    )
    interest_rate: PercentIn = Field(
        ge=0,
        le=100,
        max_digits=5,
        decimal_places=2,
        description="Requested interest rate in % per year (0-100).",
        examples=[10.5],
    )
    tenure: Annotated[int, Strict(), WholeNumber] = Field(
        ge=1, le=MAX_TENURE, description=f"Duration in months (1-{MAX_TENURE}).", examples=[24]
    )


class ScoreBreakdownOut(BaseModel):
    payment_history: Rate = Field(description="Points for EMIs paid on time, out of 35.")
    utilisation: Rate = Field(description="Points for unused approved limit, out of 30.")
    track_record: Rate = Field(description="Points for closed loans (up to 5), out of 15.")
    recent_activity: Rate = Field(description="Points for few loans started this year, out of 20.")


class EligibilityOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": 42,
                    "approval": True,
                    "interest_rate": 10.5,
                    "corrected_interest_rate": 12.0,
                    "tenure": 24,
                    "monthly_installment": 9414.69,
                    "credit_score": 44,
                    "reasons": ["rate_corrected"],
                    "score_breakdown": {
                        "payment_history": 35.0,
                        "utilisation": 9.0,
                        "track_record": 0.0,
                        "recent_activity": 0.0,
                    },
                }
            ]
        }
    )

    customer_id: CustomerId
    approval: bool = Field(description="Whether a loan on these terms would be approved.")
    interest_rate: Rate = Field(description="The requested rate, % per year.")
    corrected_interest_rate: Rate | None = Field(
        description="The rate the loan would carry (% per year): the requested rate raised to the "
        "floor of the customer's credit-score slab; null when the score rejects the loan outright."
    )
    tenure: int = Field(description="Duration in months.")
    monthly_installment: Money | None = Field(
        description="Monthly installment at the corrected rate, a currency amount; null when no rate applies."
    )
    credit_score: int = Field(ge=0, le=100, description="Credit score, 0-100.")
    reasons: list[Reason] = Field(description="Machine-readable reasons for the decision.")
    score_breakdown: ScoreBreakdownOut = Field(description="The score's four components.")


class CreateLoanOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "loan_id": 1001,
                    "customer_id": 42,
                    "loan_approved": True,
                    "message": "Loan approved at 12.00% per year.",
                    "monthly_installment": 9414.69,
                    "reasons": ["rate_corrected"],
                    "decision_id": 5001,
                }
            ]
        }
    )

    loan_id: LoanId | None = Field(description="Identifier of the new loan; null when not approved.")
    customer_id: CustomerId
    loan_approved: bool = Field(description="Whether the loan was approved and stored.")
    message: str = Field(description="Why the loan was approved or rejected, for people.")
    monthly_installment: Money | None = Field(
        description="Monthly installment of the new loan, a currency amount; null when not approved."
    )
    reasons: list[Reason] = Field(description="Machine-readable reasons for the decision.")
    decision_id: DatabaseId = Field(
        description="The recorded decision (approved or not): GET /api/decisions/{decision_id} explains it."
    )


class LoanCustomerOut(BaseModel):
    id: CustomerId
    first_name: str = Field(description="Given name.")
    last_name: str = Field(description="Family name.")
    phone_number: int = Field(description="10-digit phone number.")
    age: int | None = Field(description="Age in years; null for some ingested customers.")


class LoanDetailOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "loan_id": 1001,
                    "customer": {
                        "id": 42,
                        "first_name": "Asha",
                        "last_name": "Rao",
                        "phone_number": 9876543210,
                        "age": 31,
                    },
                    "loan_amount": 200000.0,
                    "interest_rate": 12.0,
                    "monthly_installment": 9414.69,
                    "tenure": 24,
                    "outstanding_principal": 192585.31,
                    "amount_paid": 9414.69,
                    "loan_status": "active",
                }
            ]
        }
    )

    loan_id: LoanId
    customer: LoanCustomerOut = Field(description="The borrower.")
    loan_amount: Money = Field(description="Principal, a currency amount.")
    interest_rate: Rate = Field(description="Interest rate, % per year.")
    monthly_installment: Money = Field(
        description="The EMI in force, a currency amount (a payment of another amount re-prices it)."
    )
    tenure: int = Field(description="Duration in months.")
    outstanding_principal: Money = Field(description="Principal still owed.")
    amount_paid: Money = Field(description="Everything paid so far, interest and principal.")
    loan_status: ServicingStatus = Field(description=LOAN_STATUS_DOC)


class LoanSummaryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "loan_id": 1001,
                    "loan_amount": 200000.0,
                    "interest_rate": 12.0,
                    "monthly_installment": 9414.69,
                    "repayments_left": 20,
                    "amount_paid": 37658.76,
                    "loan_status": "active",
                }
            ]
        }
    )

    loan_id: LoanId
    loan_amount: Money = Field(description="Principal, a currency amount.")
    interest_rate: Rate = Field(description="Interest rate, % per year.")
    monthly_installment: Money = Field(description="The EMI in force, a currency amount.")
    repayments_left: int = Field(ge=0, description=REPAYMENTS_LEFT_DOC)
    amount_paid: Money = Field(description="Everything paid so far, interest and principal.")
    loan_status: ServicingStatus = Field(description=LOAN_STATUS_DOC)


class LoanStatus(StrEnum):
    current = "current"
    closed = "closed"
    all = "all"
