from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from app.credit.policy import POLICY, Reason
from app.loans.schemas import ScoreBreakdownOut
from app.schemas import CustomerId, DatabaseId, LoanId, Money, Rate


class ApplicationOut(BaseModel):
    loan_amount: Money = Field(description="Principal applied for, a currency amount.")
    interest_rate: Rate = Field(description="Rate applied for, % per year.")
    tenure: int = Field(description="Duration applied for, in months.")


class ScoredProfileOut(BaseModel):
    approved_limit: Money = Field(description="The customer's approved limit then, a currency amount.")
    monthly_salary: Money = Field(description="Their monthly salary then, a currency amount.")
    current_debt: Money = Field(description="Principal of their current loans then, a currency amount.")
    current_emis: Money = Field(
        description="Monthly installments of their current loans then, a currency amount."
    )
    emis_due: int = Field(description="EMIs that had fallen due across their loans.")
    emis_paid_due: int = Field(description="Of those, EMIs paid on time.")
    closed_loans: int = Field(description="Loans closed by then.")
    loans_this_year: int = Field(description="Loans started in that calendar year.")


DECISION_EXAMPLE: JsonDict = {
    "decision_id": 5002,
    "customer_id": 42,
    "decided_at": "2026-06-15T12:00:00Z",
    "application": {"loan_amount": 900000.0, "interest_rate": 12.0, "tenure": 24},
    "profile": {
        "approved_limit": 1800000.0,
        "monthly_salary": 50000.0,
        "current_debt": 1200000.0,
        "current_emis": 20000.0,
        "emis_due": 12,
        "emis_paid_due": 12,
        "closed_loans": 0,
        "loans_this_year": 1,
    },
    "credit_score": 65,
    "score_breakdown": {
        "payment_history": 35.0,
        "utilisation": 10.0,
        "track_record": 0.0,
        "recent_activity": 15.0,
    },
    "approved": False,
    "corrected_interest_rate": 12.0,
    "monthly_installment": 42366.31,
    "reasons": ["limit_exceeded", "emi_over_half_salary"],
    "policy_version": POLICY.version,
    "loan_id": None,
    "request_id": "5f0c6d3e9b1a4e0f8a7d2c4b6e8f0a1c",
    "explanation": [
        "Total debt would be 2,100,000 (current 1,200,000 plus 900,000 requested), above the approved limit "
        "of 1,800,000",
        "Monthly installments would be 62,366.31 (current 20,000 plus 42,366.31 for this loan), above 50% of "
        "the monthly salary of 50,000 (25,000)",
    ],
}


class DecisionRecordOut(BaseModel):
    decision_id: DatabaseId = Field(description="Identifier of the decision.")
    customer_id: CustomerId
    decided_at: dt.datetime = Field(description="When it was decided (UTC).")
    application: ApplicationOut = Field(description="What was applied for.")
    profile: ScoredProfileOut = Field(description="The figures the score and the checks were computed from.")
    credit_score: int = Field(ge=0, le=100, description="The credit score, 0-100.")
    score_breakdown: ScoreBreakdownOut = Field(description="The score's four components.")
    approved: bool = Field(description="Whether the loan was approved (and created).")
    corrected_interest_rate: Rate | None = Field(
        description="The rate it was (or would have been) granted at, % per year; null when no slab applied."
    )
    monthly_installment: Money | None = Field(
        description="The installment at that rate, a currency amount; null when no slab applied."
    )
    reasons: list[Reason] = Field(description="Machine-readable reasons, as create-loan gave them.")
    policy_version: str = Field(description="The credit policy that decided: GET /api/policies/{version}.")
    loan_id: LoanId | None = Field(description="The loan created; null when rejected.")
    request_id: str | None = Field(description="The request that asked for it (X-Request-ID).")


class DecisionOut(DecisionRecordOut):
    model_config = ConfigDict(json_schema_extra={"examples": [DECISION_EXAMPLE]})

    explanation: list[str] = Field(
        description="In plain words with the figures behind them: for a rejection its principal reasons, "
        "most important first (at most four); for an approval, why the rate is what it is."
    )


class DecisionPageOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [{k: v for k, v in DECISION_EXAMPLE.items() if k != "explanation"}],
                    "next_before": 5002,
                }
            ]
        }
    )

    items: list[DecisionRecordOut] = Field(description="Decisions, newest first.")
    next_before: DatabaseId | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )
