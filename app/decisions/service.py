"""Reading recorded decisions, and explaining them with the policy that made them."""

from __future__ import annotations

import json
from typing import Any

from asyncpg import Record

from app.credit.explain import Recorded, explain
from app.credit.policy import Policy
from app.db import Reader
from app.decisions import queries
from app.decisions.schemas import (
    ApplicationOut,
    DecisionOut,
    DecisionPageOut,
    DecisionRecordOut,
    ScoredProfileOut,
)
from app.errors import NotFound
from app.loans.schemas import ScoreBreakdownOut


def _record(row: Record) -> dict[str, Any]:
    return {
        "decision_id": row["decision_id"],
        "customer_id": row["customer_id"],
        "decided_at": row["decided_at"],
        "application": ApplicationOut(
            loan_amount=row["loan_amount"], interest_rate=row["interest_rate"], tenure=row["tenure"]
        ),
        "profile": ScoredProfileOut(
            approved_limit=row["approved_limit"],
            monthly_salary=row["monthly_salary"],
            current_debt=row["current_debt"],
            current_emis=row["current_emis"],
            emis_due=row["emis_due"],
            emis_paid_due=row["emis_paid_due"],
            closed_loans=row["closed_loans"],
            loans_this_year=row["loans_this_year"],
        ),
        "credit_score": row["credit_score"],
        "score_breakdown": ScoreBreakdownOut(
            payment_history=row["payment_history"],
            utilisation=row["utilisation"],
            track_record=row["track_record"],
            recent_activity=row["recent_activity"],
        ),
        "approved": row["approved"],
        "corrected_interest_rate": row["corrected_interest_rate"],
        "monthly_installment": row["monthly_installment"],
        "reasons": json.loads(row["reasons"]),
        "policy_version": row["policy_version"],
        "loan_id": row["loan_id"],
        "request_id": row["request_id"],
    }


def _recorded(row: Record) -> Recorded:
    return Recorded(
        loan_amount=row["loan_amount"],
        interest_rate=row["interest_rate"],
        tenure=row["tenure"],
        approved_limit=row["approved_limit"],
        monthly_salary=row["monthly_salary"],
        current_debt=row["current_debt"],
        current_emis=row["current_emis"],
        credit_score=row["credit_score"],
        payment_history=row["payment_history"],
        utilisation=row["utilisation"],
        track_record=row["track_record"],
        recent_activity=row["recent_activity"],
        approved=row["approved"],
        corrected_interest_rate=row["corrected_interest_rate"],
        monthly_installment=row["monthly_installment"],
        reasons=tuple(json.loads(row["reasons"])),
    )


async def get_decision(db: Reader, decision_id: int) -> DecisionOut:
    row = await queries.decision(db, decision_id)
    if row is None:
        raise NotFound(f"Decision {decision_id} does not exist.", field="decision_id")
    policy = Policy.from_values(json.loads(row["policy_values"]))
    return DecisionOut(**_record(row), explanation=explain(_recorded(row), policy))


async def list_decisions(db: Reader, customer_id: int, before: int | None, limit: int) -> DecisionPageOut:
    rows = await queries.customer_decisions(db, customer_id, before or 2**63 - 1, limit + 1)
    if not rows:
        raise NotFound(f"Customer {customer_id} does not exist.", field="customer_id")
    items = [DecisionRecordOut(**_record(row)) for row in rows if row["decision_id"] is not None]
    page, more = items[:limit], len(items) > limit
    return DecisionPageOut(items=page, next_before=page[-1].decision_id if more else None)
