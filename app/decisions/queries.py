"""All SQL about credit decisions. Each function is one statement (one round trip).

create-loan writes its decision with the statement that writes its effect: an approval's loan and its
decision are one INSERT (the loan in a CTE), a rejection's decision one INSERT. Both also store the policy's
version if it is not yet (app/policies/queries.py), so a decision always names a stored policy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from asyncpg import Record
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.policy import CreditProfile, Decision, LoanRequest, Policy
from app.db import ReadsWith, Statement, as_reader
from app.policies.queries import REGISTER_SQL, register_parameters

_DECISION_COLUMNS = """
    decided_at, customer_id, loan_amount, interest_rate, tenure, approved_limit, monthly_salary, current_debt,
    current_emis, emis_due, emis_paid_due, closed_loans, loans_this_year, credit_score, payment_history,
    utilisation, track_record, recent_activity, approved, corrected_interest_rate, monthly_installment,
    reasons, policy_version, request_id
"""
_DECISION_VALUES = """
    :decided_at, :customer_id, :loan_amount, :interest_rate, :tenure, :approved_limit, :monthly_salary,
    :current_debt,
    :current_emis, :emis_due, :emis_paid_due, :closed_loans, :loans_this_year, :credit_score,
    :payment_history, :utilisation, :track_record, :recent_activity, :approved, :corrected_interest_rate,
    :monthly_installment, string_to_array(CAST(:reasons AS text), ','), :policy_version, :request_id
"""

_RECORD_REJECTION = text(f"""
WITH policy AS ({REGISTER_SQL})
INSERT INTO credit_decisions ({_DECISION_COLUMNS}) VALUES ({_DECISION_VALUES})
RETURNING decision_id
""")

_RECORD_APPROVAL = text(f"""
WITH policy AS ({REGISTER_SQL}),
loan AS (
    INSERT INTO loans (customer_id, loan_amount, tenure, interest_rate, monthly_installment,
                       emis_paid_on_time, start_date, end_date, outstanding_principal, installments_paid,
                       amount_paid, repayments_left)
    VALUES (:customer_id, :loan_amount, :tenure, :corrected_interest_rate, :monthly_installment, 0,
            :start_date, :end_date, :loan_amount, 0, 0, :repayments_left)
    RETURNING loan_id
)
INSERT INTO credit_decisions ({_DECISION_COLUMNS}, loan_id)
SELECT {_DECISION_VALUES}, loan.loan_id FROM loan
RETURNING decision_id, loan_id
""")


def _decision_values(
    decided_at: dt.datetime,
    customer_id: int,
    request: LoanRequest,
    profile: CreditProfile,
    decision: Decision,
    policy: Policy,
    request_id: str | None,
) -> dict[str, Any]:
    breakdown = decision.breakdown
    return {
        "decided_at": decided_at,
        "customer_id": customer_id,
        "loan_amount": request.loan_amount,
        "interest_rate": request.interest_rate,
        "tenure": request.tenure,
        "approved_limit": profile.approved_limit,
        "monthly_salary": profile.monthly_salary,
        "current_debt": profile.current_debt,
        "current_emis": profile.current_emis,
        "emis_due": profile.emis_due,
        "emis_paid_due": profile.emis_paid_due,
        "closed_loans": profile.closed_loans,
        "loans_this_year": profile.loans_this_year,
        "credit_score": decision.credit_score,
        "payment_history": breakdown.payment_history,
        "utilisation": breakdown.utilisation,
        "track_record": breakdown.track_record,
        "recent_activity": breakdown.recent_activity,
        "approved": decision.approved,
        "corrected_interest_rate": decision.corrected_interest_rate,
        "monthly_installment": decision.monthly_installment,
        # As text: an array parameter makes asyncpg introspect its type on every new connection.
        "reasons": ",".join(reason.value for reason in decision.reasons),
        "request_id": request_id,
        **register_parameters(policy),
    }


async def record_rejection(
    session: AsyncSession,
    decided_at: dt.datetime,
    customer_id: int,
    request: LoanRequest,
    profile: CreditProfile,
    decision: Decision,
    policy: Policy,
    request_id: str | None,
) -> int:
    values = _decision_values(decided_at, customer_id, request, profile, decision, policy, request_id)
    decision_id: int = (await session.execute(_RECORD_REJECTION, values)).scalar_one()
    return decision_id


async def record_approval(
    session: AsyncSession,
    decided_at: dt.datetime,
    customer_id: int,
    request: LoanRequest,
    profile: CreditProfile,
    decision: Decision,
    policy: Policy,
    request_id: str | None,
    *,
    start_date: dt.date,
    end_date: dt.date,
    repayments_left: int,
) -> tuple[int, int]:
    """The loan and its decision, in one statement: (decision_id, loan_id)."""
    values = _decision_values(decided_at, customer_id, request, profile, decision, policy, request_id)
    values.update(start_date=start_date, end_date=end_date, repayments_left=repayments_left)
    row = (await session.execute(_RECORD_APPROVAL, values)).one()
    return row.decision_id, row.loan_id


# Everything a decision's explanation needs, with the policy that made it: one round trip.
_SELECT_DECISION = """
    d.decision_id, d.customer_id, d.decided_at, d.loan_amount, d.interest_rate, d.tenure, d.approved_limit,
    d.monthly_salary, d.current_debt, d.current_emis, d.emis_due, d.emis_paid_due, d.closed_loans,
    d.loans_this_year, d.credit_score, d.payment_history, d.utilisation, d.track_record, d.recent_activity,
    d.approved, d.corrected_interest_rate, d.monthly_installment, array_to_json(d.reasons)::text AS reasons,
    d.policy_version, d.loan_id, d.request_id
"""
_DECISION = Statement.compile(
    text(f"""
SELECT {_SELECT_DECISION}, p.policy_values::text AS policy_values
FROM credit_decisions d JOIN credit_policies p ON p.version = d.policy_version
WHERE d.decision_id = :decision_id
""")
)


async def decision(db: ReadsWith, decision_id: int) -> Record | None:
    return await as_reader(db).fetchrow(_DECISION, decision_id=decision_id)


# A customer's decisions, newest first, from the (customer_id, decision_id) index; one row more than the
# page, to tell whether another page follows. The customer row tells "no decisions" from "no customer".
_CUSTOMER_DECISIONS = Statement.compile(
    text(f"""
SELECT c.customer_id AS known_customer, page.*
FROM customers c
LEFT JOIN LATERAL (
    SELECT {_SELECT_DECISION} FROM credit_decisions d
    WHERE d.customer_id = c.customer_id AND d.decision_id < :before
    ORDER BY d.decision_id DESC
    LIMIT :limit
) page ON true
WHERE c.customer_id = :customer_id
ORDER BY page.decision_id DESC
""")
)


async def customer_decisions(db: ReadsWith, customer_id: int, before: int, limit: int) -> list[Record]:
    return await as_reader(db).fetch(_CUSTOMER_DECISIONS, customer_id=customer_id, before=before, limit=limit)
