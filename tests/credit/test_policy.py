"""Tests for the pure credit policy (app.credit.policy)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.credit.dates import add_months, months_elapsed
from app.credit.policy import (
    POLICY,
    CreditProfile,
    Decision,
    LoanRecord,
    LoanRequest,
    Reason,
    ScoreBreakdown,
    approved_limit_for,
    credit_score,
    decide,
    describe,
    installment,
    profile_from_loans,
    rate_floor,
)

D = Decimal
TODAY = date(2024, 6, 15)


def scored(
    *,
    limit: str = "300",
    debt: str = "0",
    due: int = 0,
    paid: int = 0,
    closed: int = 0,
    this_year: int = 4,
    salary: str = "1000000",
    emis: str = "0",
) -> CreditProfile:
    """A profile whose score is easy to compute by hand.

    With the default limit of 300 utilisation is ``30 - debt / 10``; with ``this_year=4`` recent activity
    is 0; with nothing due payment history is 35.
    """
    return CreditProfile(
        approved_limit=D(limit),
        monthly_salary=D(salary),
        current_debt=D(debt),
        current_emis=D(emis),
        emis_due=due,
        emis_paid_due=paid,
        closed_loans=closed,
        loans_this_year=this_year,
    )


# --------------------------------------------------------------------------------------------- calendar


@pytest.mark.parametrize(
    ("start", "today", "expected"),
    [
        # All expected values verified against PostgreSQL:
        #   extract(year from age(today, start)) * 12 + extract(month from age(today, start))
        ("2017-03-09", "2017-04-08", 0),  # 30 days
        ("2017-03-09", "2017-04-09", 1),  # 1 mon
        ("2024-01-31", "2024-02-29", 0),  # 29 days
        ("2024-01-31", "2024-03-01", 1),  # 1 mon 1 day
        ("2023-01-31", "2023-02-28", 0),  # 28 days
        ("2023-01-31", "2023-03-01", 1),  # 1 mon 1 day
        ("2024-01-31", "2024-03-30", 1),  # 1 mon 30 days
        ("2024-01-31", "2024-03-31", 2),  # 2 mons
        ("2024-01-31", "2024-05-30", 3),  # 3 mons 30 days
        ("2024-01-31", "2024-05-31", 4),  # 4 mons
        ("2024-03-31", "2024-04-30", 0),  # 30 days
        ("2024-03-31", "2024-05-01", 1),  # 1 mon 1 day
        ("2024-02-29", "2024-03-28", 0),  # 28 days
        ("2024-02-29", "2024-03-29", 1),  # 1 mon
        ("2024-02-29", "2025-02-28", 11),  # 11 mons 28 days
        ("2024-02-29", "2025-03-01", 12),  # 1 year 1 day
        ("2020-06-15", "2024-06-15", 48),
        ("2024-06-15", "2024-06-15", 0),
    ],
)
def test_months_elapsed_matches_postgres_age(start: str, today: str, expected: int) -> None:
    assert months_elapsed(date.fromisoformat(start), date.fromisoformat(today)) == expected


def test_months_elapsed_is_zero_before_start() -> None:
    # PostgreSQL gives -1 mons here; the policy clamps to 0.
    assert months_elapsed(date(2024, 2, 1), date(2024, 1, 1)) == 0
    assert months_elapsed(date(2025, 1, 1), date(2024, 1, 1)) == 0


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        # Verified against PostgreSQL: (start + interval 'n months')::date
        ("2024-01-31", 1, "2024-02-29"),
        ("2023-01-31", 1, "2023-02-28"),
        ("2024-03-31", -1, "2024-02-29"),
        ("2024-02-29", 12, "2025-02-28"),
        ("2024-08-31", 13, "2025-09-30"),
        ("2024-01-31", 600, "2074-01-31"),
        ("2024-01-31", 0, "2024-01-31"),
        ("2024-11-15", 2, "2025-01-15"),
        ("2024-01-15", -1, "2023-12-15"),
    ],
)
def test_add_months_clamps_to_month_end(start: str, n: int, expected: str) -> None:
    assert add_months(date.fromisoformat(start), n) == date.fromisoformat(expected)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)), st.integers(0, 1200))
def test_add_months_then_months_elapsed_round_trips(start: date, n: int) -> None:
    end = add_months(start, n)
    # PostgreSQL age() borrows a month when the day was clamped (2024-01-31 + 1 month = 2024-02-29, whose
    # age is 29 days), so a clamped end date is one whole month short; a kept day round-trips exactly.
    assert months_elapsed(start, end) == (n if end.day == start.day else n - 1)
    assert months_elapsed(start, add_months(end, 1)) >= n


# --------------------------------------------------------------------------------------------- profile


def loan(
    amount: str,
    *,
    start: date,
    tenure: int,
    paid: int,
    emi: str = "100",
    end: date | None = None,
) -> LoanRecord:
    return LoanRecord(
        loan_amount=D(amount),
        tenure=tenure,
        monthly_installment=D(emi),
        emis_paid_on_time=paid,
        start_date=start,
        end_date=end if end is not None else add_months(start, tenure),
    )


def test_profile_from_loans_splits_current_and_closed() -> None:
    loans = [
        # closed yesterday: 12 due (tenure caps months_elapsed), 10 paid on time
        loan("1000", start=date(2023, 6, 14), tenure=12, paid=10, emi="90", end=date(2024, 6, 14)),
        # ends today: still current; 23 months elapsed, all 23 due, 30 paid counts as 23
        loan("2000.50", start=date(2022, 7, 15), tenure=24, paid=30, emi="95.25", end=TODAY),
        # started this year: 2024-02-16 -> 2024-06-15 is 3 mons 30 days => 3 due
        loan("5000", start=date(2024, 2, 16), tenure=36, paid=3, emi="170.10"),
        # started this year, not yet started: nothing due
        loan("700", start=date(2024, 7, 1), tenure=6, paid=0, emi="120"),
        # long closed
        loan("300", start=date(2019, 1, 1), tenure=6, paid=6, emi="55"),
    ]
    profile = profile_from_loans(loans, approved_limit=D("900000"), monthly_salary=D("50000"), today=TODAY)
    assert profile == CreditProfile(
        approved_limit=D("900000"),
        monthly_salary=D("50000"),
        current_debt=D("2000.50") + D("5000") + D("700"),
        current_emis=D("95.25") + D("170.10") + D("120"),
        emis_due=12 + 23 + 3 + 0 + 6,
        emis_paid_due=10 + 23 + 3 + 0 + 6,
        closed_loans=2,
        loans_this_year=2,
    )


def test_profile_from_loans_end_date_today_is_current() -> None:
    only = loan("1234.56", start=date(2023, 6, 15), tenure=12, paid=12, emi="110", end=TODAY)
    profile = profile_from_loans([only], approved_limit=D("1"), monthly_salary=D("1"), today=TODAY)
    assert profile.current_debt == D("1234.56")
    assert profile.current_emis == D("110")
    assert profile.closed_loans == 0
    assert profile.emis_due == 12
    assert profile.emis_paid_due == 12
    assert profile.loans_this_year == 0

    tomorrow = date(2024, 6, 16)
    later = profile_from_loans([only], approved_limit=D("1"), monthly_salary=D("1"), today=tomorrow)
    assert later.current_debt == D(0)
    assert later.closed_loans == 1


def test_profile_from_no_loans_is_empty() -> None:
    profile = profile_from_loans([], approved_limit=D("500000"), monthly_salary=D("12500"), today=TODAY)
    assert profile == CreditProfile(approved_limit=D("500000"), monthly_salary=D("12500"))
    assert credit_score(profile).score == 35 + 30 + 0 + 20


# --------------------------------------------------------------------------------------------- score


def test_score_components_by_hand() -> None:
    # payment 35 * 6/7 = 30; utilisation 30 * (1 - 75/300) = 22.5;
    # track 15 * 2/5 = 6; recent 20 * (1 - 1/4) = 15
    breakdown = credit_score(scored(debt="75", due=7, paid=6, closed=2, this_year=1))
    assert breakdown == ScoreBreakdown(
        payment_history=D("30.00"),
        utilisation=D("22.50"),
        track_record=D("6.00"),
        recent_activity=D("15.00"),
        score=74,  # 73.5 rounds half-up
    )


def test_score_maximum_is_100_and_caps_apply() -> None:
    assert credit_score(scored(closed=5, this_year=0)).score == 100
    capped = credit_score(scored(closed=9, this_year=0))
    assert capped.track_record == D("15.00")
    assert capped.score == 100
    assert credit_score(scored(this_year=7)).recent_activity == D("0.00")
    assert POLICY.max_score == 100


def test_payment_history_full_when_nothing_due() -> None:
    assert credit_score(scored(due=0, paid=0)).payment_history == D("35.00")
    assert credit_score(scored(due=4, paid=0)).payment_history == D("0.00")


def test_debt_over_limit_scores_zero() -> None:
    breakdown = credit_score(scored(debt="300.01", closed=5, this_year=0))
    assert breakdown == ScoreBreakdown(D("0.00"), D("0.00"), D("0.00"), D("0.00"), 0)


def test_debt_equal_to_limit_is_not_over() -> None:
    breakdown = credit_score(scored(debt="300"))
    assert breakdown.utilisation == D("0.00")
    assert breakdown.score == 35


def test_utilisation_zero_when_limit_not_positive() -> None:
    breakdown = credit_score(scored(limit="0", debt="0", this_year=0))
    assert breakdown.utilisation == D("0.00")
    assert breakdown.score == 35 + 20


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        # 16.5 (payment 35 * 33/70, utilisation 0): half-even would give 16
        (scored(debt="300", due=70, paid=33), 17),
        # 50.5 (35 + 15.5): half-even would give 50 — and 50 vs 51 is a slab boundary
        (scored(debt="145"), 51),
        # 52.5 from thirds: 35 * 2/3 + 30 * (1 - 10/360) = 23.333... + 29.1666... exactly
        (scored(limit="360", debt="10", due=3, paid=2), 53),
        # just below a tie stays down: 35 * 2/3 + 0 = 23.33
        (scored(debt="300", due=3, paid=2), 23),
    ],
)
def test_score_rounds_ties_half_up_exactly(profile: CreditProfile, expected: int) -> None:
    assert credit_score(profile).score == expected


# Profiles giving exactly these scores (limit 300: utilisation = 30 - debt/10; payment 35 * paid/7 = 5*paid).
SCORE_50 = scored(debt="150")  # 35 + 15
SCORE_51 = scored(debt="140")  # 35 + 16
SCORE_30 = scored(due=7, paid=0)  # 0 + 30
SCORE_31 = scored(debt="40", due=7, paid=1)  # 5 + 26
SCORE_10 = scored(debt="300", due=7, paid=2)  # 10 + 0
SCORE_11 = scored(debt="290", due=7, paid=2)  # 10 + 1


@pytest.mark.parametrize(
    ("profile", "score", "floor"),
    [
        (SCORE_51, 51, D("0")),
        (SCORE_50, 50, D("12")),
        (SCORE_31, 31, D("12")),
        (SCORE_30, 30, D("16")),
        (SCORE_11, 11, D("16")),
        (SCORE_10, 10, None),
    ],
)
def test_slab_boundaries(profile: CreditProfile, score: int, floor: Decimal | None) -> None:
    assert credit_score(profile).score == score
    assert rate_floor(score) == floor


def test_rate_floor_extremes() -> None:
    assert rate_floor(100) == D("0")
    assert rate_floor(0) is None


# --------------------------------------------------------------------------------------------- money


def test_installment_known_value() -> None:
    assert installment(D("100000"), D("12"), 12) == D("8884.88")


def test_installment_rounds_half_up_on_exact_tie() -> None:
    # n=1: EMI = P * (1 + r) = 100.5 * 1.01 = 101.505 exactly -> 101.51 (half-even would give 101.50)
    assert installment(D("100.5"), D("12"), 1) == D("101.51")
    # 0%: 1001 / 8 = 125.125 exactly -> 125.13 (half-even would give 125.12)
    assert installment(D("1001"), D("0"), 8) == D("125.13")


def test_installment_zero_rate_is_principal_over_tenure() -> None:
    assert installment(D("120000"), D("0"), 12) == D("10000.00")
    assert installment(D("100"), D("0"), 3) == D("33.33")


def test_installment_long_tenure_is_stable() -> None:
    # 600 months: the EMI tends to P*r = 7083.33 plus a small amortisation part.
    emi = installment(D("1000000"), D("8.5"), 600)
    assert emi == D("7187.40")
    assert emi.as_tuple().exponent == -2


def test_installment_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        installment(D("1000"), D("10"), 0)
    with pytest.raises(ValueError):
        installment(D("1000"), D("-1"), 12)


@pytest.mark.parametrize(
    ("income", "limit"),
    [
        ("12500", "500000"),  # 450000: tie, rounds up (half-even would give 400000)
        ("62500", "2300000"),  # 2250000: tie, rounds up (half-even would give 2200000)
        ("4166", "100000"),  # 149976: below the tie
        ("4166.67", "200000"),  # 150000.12: above the tie
        ("10000", "400000"),  # 360000
        ("0", "0"),
    ],
)
def test_approved_limit_for(income: str, limit: str) -> None:
    assert approved_limit_for(D(income)) == D(limit)


def test_approved_limit_for_rejects_negative_income() -> None:
    with pytest.raises(ValueError):
        approved_limit_for(D("-1"))


# --------------------------------------------------------------------------------------------- decision


def test_decide_within_policy() -> None:
    profile = scored(limit="1000000", debt="0", closed=5, this_year=0)  # score 100
    decision = decide(profile, LoanRequest(loan_amount=D("100000"), interest_rate=D("12"), tenure=12))
    assert decision == Decision(
        approved=True,
        credit_score=100,
        breakdown=credit_score(profile),
        interest_rate=D("12"),
        corrected_interest_rate=D("12"),
        monthly_installment=D("8884.88"),
        reasons=(Reason.WITHIN_POLICY,),
    )
    assert describe(decision) == "Loan approved at 12.00% with a monthly installment of 8884.88."


def test_decide_rate_corrected_to_slab_floor() -> None:
    profile = scored(limit="3000000", debt="1500000")  # 35 + 15 = 50 -> floor 12%
    decision = decide(profile, LoanRequest(loan_amount=D("100000"), interest_rate=D("8"), tenure=12))
    assert decision.approved is True
    assert decision.credit_score == 50
    assert decision.interest_rate == D("8")
    assert decision.corrected_interest_rate == D("12")
    assert decision.monthly_installment == D("8884.88")
    assert decision.reasons == (Reason.RATE_CORRECTED,)
    assert describe(decision) == (
        "Loan approved at 12.00% (raised from the requested 8.00% for credit score 50) "
        "with a monthly installment of 8884.88."
    )


def test_decide_requested_rate_above_floor_is_kept() -> None:
    profile = scored(limit="3000000", debt="1500000")  # floor 12%
    decision = decide(profile, LoanRequest(loan_amount=D("100000"), interest_rate=D("14.5"), tenure=12))
    assert decision.corrected_interest_rate == D("14.5")
    assert decision.reasons == (Reason.WITHIN_POLICY,)


def test_decide_score_too_low() -> None:
    decision = decide(SCORE_10, LoanRequest(loan_amount=D("0"), interest_rate=D("20"), tenure=12))
    assert decision.approved is False
    assert decision.credit_score == 10
    assert decision.corrected_interest_rate is None
    assert decision.monthly_installment is None
    assert decision.reasons == (Reason.CREDIT_SCORE_TOO_LOW,)
    assert describe(decision) == "Loan not approved: credit score 10 is too low (must be above 10)."


def test_decide_score_11_gets_16_percent_floor() -> None:
    decision = decide(SCORE_11, LoanRequest(loan_amount=D("0"), interest_rate=D("10"), tenure=12))
    assert decision.approved is True
    assert decision.corrected_interest_rate == D("16")
    assert decision.monthly_installment == D("0.00")
    assert decision.reasons == (Reason.RATE_CORRECTED,)


def test_decide_debt_over_limit() -> None:
    profile = scored(limit="1000", debt="1000.01", closed=5, this_year=0)
    decision = decide(profile, LoanRequest(loan_amount=D("1"), interest_rate=D("10"), tenure=12))
    assert decision.approved is False
    assert decision.credit_score == 0
    assert decision.breakdown.payment_history == D("0.00")
    assert decision.corrected_interest_rate is None
    assert decision.reasons == (Reason.DEBT_OVER_LIMIT, Reason.CREDIT_SCORE_TOO_LOW, Reason.LIMIT_EXCEEDED)
    assert describe(decision).startswith(
        "Loan not approved: current debt already exceeds the approved limit; "
    )


def test_decide_limit_exceeded() -> None:
    profile = scored(limit="1000000", debt="950000", closed=5, this_year=0)  # score 71.5 -> 72
    ok = decide(profile, LoanRequest(loan_amount=D("50000"), interest_rate=D("10"), tenure=12))
    assert ok.approved is True  # exactly at the limit is allowed
    over = decide(profile, LoanRequest(loan_amount=D("50000.01"), interest_rate=D("10"), tenure=12))
    assert over.approved is False
    assert over.credit_score == 72
    assert over.reasons == (Reason.LIMIT_EXCEEDED,)
    assert over.corrected_interest_rate == D("10")
    assert over.monthly_installment == installment(D("50000.01"), D("10"), 12)
    assert describe(over) == "Loan not approved: this loan would take total debt above the approved limit."


def test_decide_emi_over_half_salary_and_equality_allowed() -> None:
    # New installment 8884.88 at 12%; existing EMIs 1115.12 -> total 10000.00
    request = LoanRequest(loan_amount=D("100000"), interest_rate=D("12"), tenure=12)
    at_half = scored(limit="1000000", closed=5, this_year=0, emis="1115.12", salary="20000")
    assert decide(at_half, request).approved is True
    over_half = scored(limit="1000000", closed=5, this_year=0, emis="1115.13", salary="20000")
    decision = decide(over_half, request)
    assert decision.approved is False
    assert decision.reasons == (Reason.EMI_OVER_HALF_SALARY,)
    assert decision.monthly_installment == D("8884.88")
    assert describe(decision) == (
        "Loan not approved: total monthly installments would exceed 50% of monthly salary."
    )


def test_decide_emi_check_uses_corrected_rate() -> None:
    # Score 50 -> 12% floor. At the requested 0% the EMI would be 8333.33 (fits); at 12% it is 8884.88.
    profile = scored(limit="3000000", debt="1500000", salary="17000")
    decision = decide(profile, LoanRequest(loan_amount=D("100000"), interest_rate=D("0"), tenure=12))
    assert decision.monthly_installment == D("8884.88")
    assert decision.reasons == (Reason.EMI_OVER_HALF_SALARY,)


def test_decide_reports_all_failing_reasons_in_order() -> None:
    profile = scored(limit="100000", debt="60000", closed=5, this_year=0, emis="5000", salary="10000")
    decision = decide(profile, LoanRequest(loan_amount=D("50000"), interest_rate=D("12"), tenure=12))
    assert decision.approved is False
    assert decision.reasons == (Reason.LIMIT_EXCEEDED, Reason.EMI_OVER_HALF_SALARY)
    assert describe(decision) == (
        "Loan not approved: this loan would take total debt above the approved limit; "
        "total monthly installments would exceed 50% of monthly salary."
    )


def test_reason_values_are_stable() -> None:
    assert [r.value for r in Reason] == [
        "debt_over_limit",
        "credit_score_too_low",
        "limit_exceeded",
        "emi_over_half_salary",
        "rate_corrected",
        "within_policy",
    ]


# --------------------------------------------------------------------------------------------- properties


def money(max_cents: int = 10**11, min_cents: int = 0) -> st.SearchStrategy[Decimal]:
    return st.integers(min_cents, max_cents).map(lambda cents: D(cents).scaleb(-2))


@st.composite
def profiles(draw: st.DrawFn) -> CreditProfile:
    due = draw(st.integers(0, 2000))
    return CreditProfile(
        approved_limit=draw(money()),
        monthly_salary=draw(money(10**9)),
        current_debt=draw(money()),
        current_emis=draw(money(10**8)),
        emis_due=due,
        emis_paid_due=draw(st.integers(0, due)),
        closed_loans=draw(st.integers(0, 20)),
        loans_this_year=draw(st.integers(0, 20)),
    )


requests = st.builds(
    LoanRequest,
    loan_amount=money(10**10),
    interest_rate=money(5000),
    tenure=st.integers(1, 600),
)


@given(profiles())
def test_property_score_within_bounds(profile: CreditProfile) -> None:
    breakdown = credit_score(profile)
    assert 0 <= breakdown.score <= 100
    for part, weight in [
        (breakdown.payment_history, 35),
        (breakdown.utilisation, 30),
        (breakdown.track_record, 15),
        (breakdown.recent_activity, 20),
    ]:
        assert D(0) <= part <= D(weight)


@given(profiles(), st.integers(0, 2000))
def test_property_score_monotone_in_on_time_payments(profile: CreditProfile, extra: int) -> None:
    better = CreditProfile(
        approved_limit=profile.approved_limit,
        monthly_salary=profile.monthly_salary,
        current_debt=profile.current_debt,
        current_emis=profile.current_emis,
        emis_due=profile.emis_due,
        emis_paid_due=min(profile.emis_paid_due + extra, profile.emis_due),
        closed_loans=profile.closed_loans,
        loans_this_year=profile.loans_this_year,
    )
    assert credit_score(better).score >= credit_score(profile).score


@given(profiles(), money(10**9, 1))
def test_property_score_zero_when_debt_over_limit(profile: CreditProfile, excess: Decimal) -> None:
    over = CreditProfile(
        approved_limit=profile.approved_limit,
        monthly_salary=profile.monthly_salary,
        current_debt=profile.approved_limit + excess,
        emis_due=profile.emis_due,
        emis_paid_due=profile.emis_paid_due,
        closed_loans=profile.closed_loans,
        loans_this_year=profile.loans_this_year,
    )
    assert credit_score(over).score == 0
    assert Reason.DEBT_OVER_LIMIT in decide(over, LoanRequest(D("1"), D("10"), 12)).reasons


@settings(max_examples=300)
@given(profiles(), requests)
def test_property_decide_never_approves_beyond_limits(profile: CreditProfile, request: LoanRequest) -> None:
    decision = decide(profile, request)
    assert decision.approved == (decision.reasons in {(Reason.WITHIN_POLICY,), (Reason.RATE_CORRECTED,)})
    if decision.approved:
        assert decision.credit_score > 10
        assert profile.current_debt + request.loan_amount <= profile.approved_limit
        assert decision.monthly_installment is not None
        assert 2 * (profile.current_emis + decision.monthly_installment) <= profile.monthly_salary
        assert decision.corrected_interest_rate is not None
        assert decision.corrected_interest_rate >= request.interest_rate
        assert decision.corrected_interest_rate >= rate_floor(decision.credit_score)
    else:
        assert Reason.WITHIN_POLICY not in decision.reasons
        assert Reason.RATE_CORRECTED not in decision.reasons


@given(money(10**11, 1), money(5000), st.integers(1, 600))
def test_property_installment_covers_principal(principal: Decimal, rate: Decimal, tenure: int) -> None:
    emi = installment(principal, rate, tenure)
    assert emi.as_tuple().exponent == -2
    # Exact EMI * n >= P; rounding to the cent can lose at most half a cent per month.
    assert emi * tenure >= principal - D("0.005") * tenure
