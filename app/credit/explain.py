"""Why a recorded decision came out as it did, in plain words with the figures behind it. Pure.

A rejection gives its principal reasons (at most four), most important first: a debt already over the limit
(it zeroes the score), a score no slab takes, then the two affordability checks. An approval says whether
the requested rate stood or why it was raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.credit.policy import Policy, Reason

MAX_REASONS = 4
_ORDER = (
    Reason.DEBT_OVER_LIMIT,
    Reason.CREDIT_SCORE_TOO_LOW,
    Reason.LIMIT_EXCEEDED,
    Reason.EMI_OVER_HALF_SALARY,
)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A decision as credit_decisions keeps it."""

    loan_amount: Decimal
    interest_rate: Decimal
    tenure: int
    approved_limit: Decimal
    monthly_salary: Decimal
    current_debt: Decimal
    current_emis: Decimal
    credit_score: int
    payment_history: Decimal
    utilisation: Decimal
    track_record: Decimal
    recent_activity: Decimal
    approved: bool
    corrected_interest_rate: Decimal | None
    monthly_installment: Decimal | None
    reasons: tuple[str, ...]


def amount(value: Decimal) -> str:
    """2100000 -> '2,100,000'; 4707.35 -> '4,707.35'."""
    return f"{int(value):,}" if value == value.to_integral_value() else f"{value:,.2f}"


def _rate(value: Decimal) -> str:
    return f"{value.normalize():f}%"


def _percent_of(share: Decimal) -> str:
    return f"{(share * 100).normalize():f}%"


def explain(decision: Recorded, policy: Policy) -> list[str]:
    if decision.approved:
        return [_approval(decision, policy)]
    reasons = [Reason(reason) for reason in decision.reasons]
    ranked = [reason for reason in _ORDER if reason in reasons][:MAX_REASONS]
    return [_rejection(reason, decision, policy) for reason in ranked]


def _components(d: Recorded, policy: Policy) -> str:
    return (
        f"payment history {d.payment_history}/{policy.payment_history_weight}, utilisation "
        f"{d.utilisation}/{policy.utilisation_weight}, track record "
        f"{d.track_record}/{policy.track_record_weight}, recent activity "
        f"{d.recent_activity}/{policy.recent_activity_weight}"
    )


def _rejection(reason: Reason, d: Recorded, policy: Policy) -> str:
    if reason is Reason.DEBT_OVER_LIMIT:
        return (
            f"Current debt of {amount(d.current_debt)} is already above the approved limit of "
            f"{amount(d.approved_limit)}, which makes the credit score 0"
        )
    if reason is Reason.CREDIT_SCORE_TOO_LOW:
        return (
            f"Credit score {d.credit_score} is not above {policy.slabs[-1][0]}, the lowest score any rate "
            f"slab takes ({_components(d, policy)})"
        )
    if reason is Reason.LIMIT_EXCEEDED:
        return (
            f"Total debt would be {amount(d.current_debt + d.loan_amount)} (current {amount(d.current_debt)} "
            f"plus {amount(d.loan_amount)} requested), above the approved limit of {amount(d.approved_limit)}"
        )
    assert d.monthly_installment is not None  # this check only runs when a slab gave an installment
    cap = policy.max_emi_share_of_salary * d.monthly_salary
    return (
        f"Monthly installments would be {amount(d.current_emis + d.monthly_installment)} (current "
        f"{amount(d.current_emis)} plus {amount(d.monthly_installment)} for this loan), above "
        f"{_percent_of(policy.max_emi_share_of_salary)} of the monthly salary of {amount(d.monthly_salary)} "
        f"({amount(cap)})"
    )


def _approval(d: Recorded, policy: Policy) -> str:
    assert d.corrected_interest_rate is not None and d.monthly_installment is not None
    if d.corrected_interest_rate > d.interest_rate:
        threshold = next(above for above, floor in policy.slabs if d.credit_score > above)
        return (
            f"Approved at {_rate(d.corrected_interest_rate)}, raised from the requested "
            f"{_rate(d.interest_rate)}: credit score {d.credit_score} is in the slab for scores above "
            f"{threshold}, whose minimum rate is {_rate(d.corrected_interest_rate)}"
        )
    return (
        f"Approved at the requested {_rate(d.interest_rate)}: credit score {d.credit_score}, total debt "
        f"{amount(d.current_debt + d.loan_amount)} within the approved limit of "
        f"{amount(d.approved_limit)}, and installments of "
        f"{amount(d.current_emis + d.monthly_installment)} within "
        f"{_percent_of(policy.max_emi_share_of_salary)} of the monthly salary"
    )
