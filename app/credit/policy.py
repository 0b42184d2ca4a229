"""Credit policy: scoring, interest-rate slabs, EMI arithmetic and the approval decision.

Pure module: no I/O, no clock (the caller passes ``today``), stdlib only. Money is ``Decimal`` throughout
and is rounded half-up only where a figure is presented or stored. The score itself is computed with exact
rational arithmetic so that a component sum landing on exactly ``x.5`` always rounds up, independent of any
decimal context precision.

Every weight, cap and slab lives in a :class:`Policy`: the built-in :data:`POLICY`, or the one a lender's
policy file gives (app/policy_file.py), handed to these functions by the services.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from enum import StrEnum
from typing import Any

from app.credit.dates import months_elapsed

__all__ = [
    "POLICY",
    "CreditProfile",
    "Decision",
    "LoanRecord",
    "LoanRequest",
    "Policy",
    "Reason",
    "ScoreBreakdown",
    "approved_limit_for",
    "credit_score",
    "decide",
    "describe",
    "installment",
    "profile_from_loans",
    "rate_floor",
]

CENT = Decimal("0.01")
_EMI_PRECISION = 50  # digits; enough for (1 + r) ** 600 to be exact far beyond the cent


class Reason(StrEnum):
    DEBT_OVER_LIMIT = "debt_over_limit"  # current debt already above approved limit (score 0)
    CREDIT_SCORE_TOO_LOW = "credit_score_too_low"  # score <= 10
    LIMIT_EXCEEDED = "limit_exceeded"  # current_debt + amount > approved_limit
    EMI_OVER_HALF_SALARY = "emi_over_half_salary"  # current_emis + installment > salary / 2
    RATE_CORRECTED = "rate_corrected"  # approved, but at a higher rate than requested (slab floor)
    WITHIN_POLICY = "within_policy"  # approved at the requested rate


@dataclass(frozen=True, slots=True)
class Policy:
    """All tunable numbers of the credit policy, in one place."""

    # Score component weights (they sum to the maximum score, 100).
    payment_history_weight: int = 35
    utilisation_weight: int = 30
    track_record_weight: int = 15
    recent_activity_weight: int = 20
    # Closed loans beyond this count earn no more track record; loans started this year beyond this
    # count cannot take recent activity below zero.
    track_record_cap: int = 5
    recent_activity_cap: int = 4
    # Interest-rate slabs, highest first: a score strictly above ``min_score_exclusive`` gets ``floor``
    # (percent per annum). A score at or below the last threshold matches no slab and is rejected.
    slabs: tuple[tuple[int, Decimal], ...] = (
        (50, Decimal("0")),
        (30, Decimal("12")),
        (10, Decimal("16")),
    )
    # Total monthly installments may be at most this share of the monthly salary (equality allowed).
    max_emi_share_of_salary: Decimal = Decimal("0.5")
    # Registration: approved limit = multiplier x monthly income, rounded half-up to a multiple of this.
    limit_income_multiplier: int = 36
    limit_rounding_unit: Decimal = Decimal("100000")

    @property
    def max_score(self) -> int:
        return (
            self.payment_history_weight
            + self.utilisation_weight
            + self.track_record_weight
            + self.recent_activity_weight
        )

    def values(self) -> dict[str, object]:
        """The effective values as canonical JSON-ready data: Decimals as plain normalised strings
        (12, 12.0 and 12.00 are one value), slabs as [threshold, floor] pairs."""

        def plain(number: Decimal) -> str:
            return f"{number.normalize():f}"

        return {
            "payment_history_weight": self.payment_history_weight,
            "utilisation_weight": self.utilisation_weight,
            "track_record_weight": self.track_record_weight,
            "recent_activity_weight": self.recent_activity_weight,
            "track_record_cap": self.track_record_cap,
            "recent_activity_cap": self.recent_activity_cap,
            "slabs": [[threshold, plain(floor)] for threshold, floor in self.slabs],
            "max_emi_share_of_salary": plain(self.max_emi_share_of_salary),
            "limit_income_multiplier": self.limit_income_multiplier,
            "limit_rounding_unit": plain(self.limit_rounding_unit),
        }

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Policy:
        """The policy `values()` describes (a recorded version's, say)."""
        return cls(
            **{
                **{key: value for key, value in values.items() if key != "slabs"},
                "slabs": tuple((int(threshold), Decimal(floor)) for threshold, floor in values["slabs"]),
                "max_emi_share_of_salary": Decimal(values["max_emi_share_of_salary"]),
                "limit_rounding_unit": Decimal(values["limit_rounding_unit"]),
            }
        )

    @property
    def version(self) -> str:
        """The first 12 hex digits of the SHA-256 of `values()` in canonical JSON: decisions name it."""
        canonical = json.dumps(self.values(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


POLICY = Policy()
"""The built-in policy; a lender's file (CREDIT_POLICY_FILE, app/policy_file.py) replaces it. Services are
handed the loaded one; functions below take it as `policy`, defaulting to this for tests and tools."""


# --------------------------------------------------------------------------------------------- profile


@dataclass(frozen=True, slots=True)
class LoanRecord:
    """One historical loan, as the policy sees it."""

    loan_amount: Decimal
    tenure: int
    monthly_installment: Decimal
    emis_paid_on_time: int
    start_date: date
    end_date: date
    installments_paid: int = 0
    paid_off_on: date | None = None  # a paid-off loan is closed from that day


@dataclass(frozen=True, slots=True)
class CreditProfile:
    """The aggregates the policy needs (the service computes these in one SQL query)."""

    approved_limit: Decimal
    monthly_salary: Decimal
    current_debt: Decimal = Decimal(0)
    current_emis: Decimal = Decimal(0)
    emis_due: int = 0  # sum over all loans of min(installments due, months_elapsed); see profile_from_loans
    emis_paid_due: int = 0  # sum over all loans of min(emis_paid_on_time, tenure, months_elapsed)
    closed_loans: int = 0
    loans_this_year: int = 0


def profile_from_loans(
    loans: Iterable[LoanRecord], *, approved_limit: Decimal, monthly_salary: Decimal, today: date
) -> CreditProfile:
    """Aggregate a customer's loans into a :class:`CreditProfile` (the reference for the SQL version).

    A loan is current while ``end_date >= today`` and it is not paid off; closed from its end date or
    from the day it was paid off, whichever comes first. A loan has ``tenure`` installments, except once
    paid off: then only those it took, so repaying early never counts later months as missed.
    """
    current_debt = Decimal(0)
    current_emis = Decimal(0)
    emis_due = emis_paid_due = closed = this_year = 0
    for loan in loans:
        paid_off = loan.paid_off_on is not None and loan.paid_off_on <= today
        if loan.end_date >= today and not paid_off:
            current_debt += loan.loan_amount
            current_emis += loan.monthly_installment
        else:
            closed += 1
        installments = loan.installments_paid if paid_off else loan.tenure
        due = min(installments, months_elapsed(loan.start_date, today))
        emis_due += due
        emis_paid_due += min(loan.emis_paid_on_time, due)
        if loan.start_date.year == today.year:
            this_year += 1
    return CreditProfile(
        approved_limit=approved_limit,
        monthly_salary=monthly_salary,
        current_debt=current_debt,
        current_emis=current_emis,
        emis_due=emis_due,
        emis_paid_due=emis_paid_due,
        closed_loans=closed,
        loans_this_year=this_year,
    )


# --------------------------------------------------------------------------------------------- score


@dataclass(frozen=True, slots=True)
class ScoreBreakdown:
    """The four score components (quantized half-up to 2 places for presentation) and the score."""

    payment_history: Decimal
    utilisation: Decimal
    track_record: Decimal
    recent_activity: Decimal
    score: int


def _present(numerator: int, denominator: int) -> Decimal:
    """numerator/denominator (>= 0) rounded half-up to the cent, exactly."""
    cents = (200 * numerator + denominator) // (2 * denominator)  # floor(100x + 1/2)
    return Decimal(cents).scaleb(-2)


_ZERO_BREAKDOWN = ScoreBreakdown(
    payment_history=Decimal("0.00"),
    utilisation=Decimal("0.00"),
    track_record=Decimal("0.00"),
    recent_activity=Decimal("0.00"),
    score=0,
)


def credit_score(profile: CreditProfile, policy: Policy = POLICY) -> ScoreBreakdown:
    """Score a profile 0..100. All components and the score are 0 when the current debt already exceeds
    the approved limit.

    Exact rational arithmetic on integer numerators and denominators (Decimal.as_integer_ratio is
    exact): the same figures fractions.Fraction gives, at a fifth of the cost on the eligibility path.
    """
    p = policy
    if profile.current_debt > profile.approved_limit:
        return _ZERO_BREAKDOWN

    # Each component as (numerator, denominator), denominator > 0, value >= 0.
    if profile.emis_due <= 0:
        history = (p.payment_history_weight, 1)  # nothing was due yet
    else:
        paid = min(max(profile.emis_paid_due, 0), profile.emis_due)
        history = (p.payment_history_weight * paid, profile.emis_due)

    if profile.approved_limit <= 0:
        utilisation = (0, 1)
    else:
        debt_n, debt_d = profile.current_debt.as_integer_ratio()
        limit_n, limit_d = profile.approved_limit.as_integer_ratio()
        used_n, used_d = debt_n * limit_d, debt_d * limit_n  # debt / limit, used_d > 0
        used_n = min(max(used_n, 0), used_d)  # clamp to [0, 1]
        utilisation = (p.utilisation_weight * (used_d - used_n), used_d)

    closed = min(max(profile.closed_loans, 0), p.track_record_cap)
    track_record = (p.track_record_weight * closed, p.track_record_cap)

    recent = min(max(profile.loans_this_year, 0), p.recent_activity_cap)
    recent_activity = (p.recent_activity_weight * (p.recent_activity_cap - recent), p.recent_activity_cap)

    total_n, total_d = 0, 1
    for n, d in (history, utilisation, track_record, recent_activity):
        total_n, total_d = total_n * d + n * total_d, total_d * d
    return ScoreBreakdown(
        payment_history=_present(*history),
        utilisation=_present(*utilisation),
        track_record=_present(*track_record),
        recent_activity=_present(*recent_activity),
        score=(2 * total_n + total_d) // (2 * total_d),  # floor(x + 1/2): a tie (x.5) rounds up
    )


def rate_floor(score: int, policy: Policy = POLICY) -> Decimal | None:
    """The minimum annual interest rate (percent) for ``score``; ``None`` when no slab applies (rejected)."""
    for min_score_exclusive, floor in policy.slabs:
        if score > min_score_exclusive:
            return floor
    return None


# --------------------------------------------------------------------------------------------- money


def installment(principal: Decimal, annual_rate: Decimal, tenure: int) -> Decimal:
    """Reducing-balance EMI ``P*r*(1+r)^n / ((1+r)^n - 1)`` with ``r = annual_rate / 12 / 100``
    (``P / n`` at 0%), rounded half-up to the cent."""
    if tenure < 1:
        raise ValueError(f"tenure must be at least 1 month, got {tenure}")
    if annual_rate < 0:
        raise ValueError(f"annual_rate must not be negative, got {annual_rate}")
    principal = Decimal(principal)
    with localcontext(prec=_EMI_PRECISION):
        if annual_rate == 0:
            emi = principal / tenure
        else:
            r = Decimal(annual_rate) / 12 / 100
            growth = (1 + r) ** tenure
            emi = principal * r * growth / (growth - 1)
        return emi.quantize(CENT, ROUND_HALF_UP)


def approved_limit_for(monthly_income: Decimal, policy: Policy = POLICY) -> Decimal:
    """Registration rule: ``36 x monthly income``, rounded half-up to the nearest 100000."""
    if monthly_income < 0:
        raise ValueError(f"monthly_income must not be negative, got {monthly_income}")
    p = policy
    with localcontext(prec=_EMI_PRECISION):
        units = (p.limit_income_multiplier * Decimal(monthly_income) / p.limit_rounding_unit).quantize(
            Decimal(1), ROUND_HALF_UP
        )
        return units * p.limit_rounding_unit


# --------------------------------------------------------------------------------------------- decision


@dataclass(frozen=True, slots=True)
class LoanRequest:
    loan_amount: Decimal
    interest_rate: Decimal
    tenure: int


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    credit_score: int
    breakdown: ScoreBreakdown
    interest_rate: Decimal  # as requested
    corrected_interest_rate: Decimal | None  # None only when no slab applies (score <= 10)
    monthly_installment: Decimal | None  # at the corrected rate; None when no slab applies
    # All failing reasons for a rejection (in Reason order); for approvals (RATE_CORRECTED,) or
    # (WITHIN_POLICY,).
    reasons: tuple[Reason, ...]


def decide(profile: CreditProfile, request: LoanRequest, policy: Policy = POLICY) -> Decision:
    """Apply the policy to a loan request.

    A rejection lists every check that fails. The EMI-vs-salary check needs an installment, which only
    exists when a slab applies, so it is not evaluated for a score of 10 or less.
    """
    breakdown = credit_score(profile, policy)
    floor = rate_floor(breakdown.score, policy)

    corrected: Decimal | None = None
    emi: Decimal | None = None
    if floor is not None:
        corrected = max(request.interest_rate, floor)
        emi = installment(request.loan_amount, corrected, request.tenure)

    failing: list[Reason] = []
    if profile.current_debt > profile.approved_limit:
        failing.append(Reason.DEBT_OVER_LIMIT)
    if floor is None:
        failing.append(Reason.CREDIT_SCORE_TOO_LOW)
    if profile.current_debt + request.loan_amount > profile.approved_limit:
        failing.append(Reason.LIMIT_EXCEEDED)
    if (
        emi is not None
        and profile.current_emis + emi > policy.max_emi_share_of_salary * profile.monthly_salary
    ):
        failing.append(Reason.EMI_OVER_HALF_SALARY)

    if failing:
        reasons = tuple(failing)
    elif corrected is not None and corrected > request.interest_rate:
        reasons = (Reason.RATE_CORRECTED,)
    else:
        reasons = (Reason.WITHIN_POLICY,)

    return Decision(
        approved=not failing,
        credit_score=breakdown.score,
        breakdown=breakdown,
        interest_rate=request.interest_rate,
        corrected_interest_rate=corrected,
        monthly_installment=emi,
        reasons=reasons,
    )


def _pct(rate: Decimal) -> str:
    return f"{Decimal(rate).quantize(CENT, ROUND_HALF_UP)}%"


def _rejection_text(reason: Reason, decision: Decision, policy: Policy) -> str:
    if reason is Reason.DEBT_OVER_LIMIT:
        return "current debt already exceeds the approved limit"
    if reason is Reason.CREDIT_SCORE_TOO_LOW:
        lowest = policy.slabs[-1][0]
        return f"credit score {decision.credit_score} is too low (must be above {lowest})"
    if reason is Reason.LIMIT_EXCEEDED:
        return "this loan would take total debt above the approved limit"
    if reason is Reason.EMI_OVER_HALF_SALARY:
        share = (policy.max_emi_share_of_salary * 100).normalize()
        return f"total monthly installments would exceed {share:f}% of monthly salary"
    return reason.value


def describe(decision: Decision, policy: Policy = POLICY) -> str:
    """One human sentence explaining the decision (the create-loan ``message``)."""
    if decision.approved:
        assert decision.corrected_interest_rate is not None and decision.monthly_installment is not None
        rate = _pct(decision.corrected_interest_rate)
        emi = decision.monthly_installment.quantize(CENT, ROUND_HALF_UP)
        if Reason.RATE_CORRECTED in decision.reasons:
            return (
                f"Loan approved at {rate} (raised from the requested {_pct(decision.interest_rate)} "
                f"for credit score {decision.credit_score}) with a monthly installment of {emi}."
            )
        return f"Loan approved at {rate} with a monthly installment of {emi}."
    why = "; ".join(_rejection_text(reason, decision, policy) for reason in decision.reasons)
    return f"Loan not approved: {why}."
