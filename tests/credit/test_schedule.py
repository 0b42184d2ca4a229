"""The servicing arithmetic: schedules and payments, exact to the cent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.credit.dates import add_months
from app.credit.policy import installment
from app.credit.schedule import (
    LoanState,
    PaymentRefused,
    Refusal,
    all_due_date_texts,
    apply_payment,
    imported_servicing,
    imported_state,
    monthly_interest,
    project,
    schedule,
)

START = dt.date(2026, 1, 31)  # a month-end start: due dates clamp (Feb 28, Mar 31, ...)

amounts = st.decimals(min_value=Decimal("1.00"), max_value=Decimal("100000000.00"), places=2)
rates = st.decimals(min_value=Decimal("0.00"), max_value=Decimal("100.00"), places=2)
tenures = st.integers(min_value=1, max_value=600)


def new_loan(amount: Decimal, rate: Decimal, tenure: int) -> LoanState:
    return LoanState(
        loan_amount=amount,
        annual_rate=rate,
        tenure=tenure,
        start_date=START,
        outstanding=amount,
        installments_paid=0,
        monthly_installment=installment(amount, rate, tenure),
    )


@settings(max_examples=300, deadline=None)
@given(amounts, rates, tenures)
def test_principal_parts_add_up_to_the_amount_and_balances_never_go_negative(
    amount: Decimal, rate: Decimal, tenure: int
) -> None:
    rows = schedule(amount, rate, tenure, START)
    assert sum(row.principal for row in rows) == amount
    assert all(row.balance_after >= 0 and row.principal >= 0 for row in rows)
    assert rows[-1].balance_after == 0 and len(rows) <= tenure
    assert [row.number for row in rows] == list(range(1, len(rows) + 1))
    assert all(row.due_date == add_months(START, row.number) for row in rows)
    assert all(row.amount == row.principal + row.interest for row in rows)
    if rate == 0:
        assert all(row.interest == 0 for row in rows)


@settings(max_examples=200, deadline=None)
@given(amounts, rates, tenures)
def test_paying_the_quoted_emi_on_each_due_date_is_on_time_every_month_and_ends_at_zero(
    amount: Decimal, rate: Decimal, tenure: int
) -> None:
    state = new_loan(amount, rate, tenure)
    emi = state.monthly_installment
    for row in schedule(amount, rate, tenure, START):
        assert row.amount == emi or row.balance_after == 0  # the EMI, or the stated final amount
        paid = apply_payment(state, row.amount, row.due_date)
        assert paid.on_time and paid.installment_number == row.number
        assert (paid.interest, paid.principal, paid.outstanding_after) == (
            row.interest,
            row.principal,
            row.balance_after,
        )
        state = paid.after
    assert state.outstanding == 0 and state.paid_off and state.remaining() == []
    with pytest.raises(PaymentRefused) as refused:
        apply_payment(state, emi, row.due_date)
    assert refused.value.refusal is Refusal.PAID_OFF


@settings(max_examples=200, deadline=None)
@given(amounts, rates, st.integers(min_value=1, max_value=120), st.lists(st.floats(0, 1), max_size=130))
def test_after_any_valid_payments_paid_principal_plus_outstanding_is_the_amount(
    amount: Decimal, rate: Decimal, tenure: int, shares: list[float]
) -> None:
    state = new_loan(amount, rate, tenure)
    paid_principal = Decimal("0.00")
    for share in shares:
        if state.paid_off:
            break
        interest, payoff = state.next_interest, state.payoff
        if state.next_number == tenure:
            pay = payoff
        else:  # anywhere from the interest alone to the payoff, to the cent
            pay = interest + ((payoff - interest) * Decimal(str(share))).quantize(Decimal("0.01"))
        paid = apply_payment(state, pay, state.next_due_date)
        paid_principal += paid.principal
        state = paid.after
        assert state.outstanding >= 0 and state.monthly_installment >= 0
        assert paid_principal + state.outstanding == amount
        assert sum(row.principal for row in state.remaining()) == state.outstanding


def test_the_issues_extreme_term_ends_early_without_a_negative_balance() -> None:
    rows = schedule(Decimal("1126.87"), Decimal("16"), 498, START)
    assert len(rows) < 498
    assert rows[-1].balance_after == 0 and sum(row.principal for row in rows) == Decimal("1126.87")


# A worked example: 100,000 at 12% over 12 months. EMI 8,884.88; the first month's interest 1,000.00.
LOAN = new_loan(Decimal("100000.00"), Decimal("12"), 12)
FIRST_DUE = add_months(START, 1)


def test_the_worked_example_figures() -> None:
    assert LOAN.monthly_installment == Decimal("8884.88")
    assert monthly_interest(LOAN.outstanding, LOAN.annual_rate) == Decimal("1000.00")
    assert LOAN.payoff == Decimal("101000.00")


def test_an_over_payment_lowers_the_emi_over_the_installments_left() -> None:
    paid = apply_payment(LOAN, Decimal("20000.00"), FIRST_DUE)
    assert (paid.interest, paid.principal, paid.outstanding_after) == (
        Decimal("1000.00"),
        Decimal("19000.00"),
        Decimal("81000.00"),
    )
    assert paid.monthly_installment_after == installment(Decimal("81000.00"), Decimal("12"), 11)
    # 81,000 x 0.01 x 1.01^11 / (1.01^11 - 1) = 7,812.78
    assert paid.monthly_installment_after == Decimal("7812.78")
    assert paid.on_time
    assert len(paid.after.remaining()) == 11  # the tenure and due dates never move


def test_an_under_payment_raises_the_emi_and_is_not_on_time() -> None:
    paid = apply_payment(LOAN, Decimal("5000.00"), FIRST_DUE)
    assert paid.outstanding_after == Decimal("96000.00")
    assert paid.monthly_installment_after == installment(Decimal("96000.00"), Decimal("12"), 11)
    assert paid.monthly_installment_after > LOAN.monthly_installment
    assert not paid.on_time


def test_a_late_emi_settles_its_installment_but_is_not_on_time() -> None:
    paid = apply_payment(LOAN, LOAN.monthly_installment, FIRST_DUE + dt.timedelta(days=1))
    assert paid.installment_number == 1 and not paid.on_time
    assert paid.monthly_installment_after == LOAN.monthly_installment


@pytest.mark.parametrize(
    ("amount", "refusal", "figure"),
    [
        (Decimal("999.99"), Refusal.BELOW_INTEREST, Decimal("1000.00")),
        (Decimal("101000.01"), Refusal.ABOVE_PAYOFF, Decimal("101000.00")),
    ],
)
def test_payments_outside_interest_to_payoff_are_refused_with_the_figure(
    amount: Decimal, refusal: Refusal, figure: Decimal
) -> None:
    with pytest.raises(PaymentRefused) as refused:
        apply_payment(LOAN, amount, FIRST_DUE)
    assert (refused.value.refusal, refused.value.amount) == (refusal, figure)


def test_the_payoff_closes_the_loan() -> None:
    paid = apply_payment(LOAN, Decimal("101000.00"), FIRST_DUE)
    assert paid.outstanding_after == 0 and paid.after.paid_off and paid.after.payoff == 0


def test_the_last_installment_takes_only_the_exact_payoff() -> None:
    state = LOAN
    for row in schedule(Decimal("100000.00"), Decimal("12"), 12, START)[:11]:
        state = apply_payment(state, row.amount, row.due_date).after
    with pytest.raises(PaymentRefused) as refused:
        apply_payment(state, state.monthly_installment, state.next_due_date)
    assert refused.value.refusal is Refusal.FINAL_NEEDS_PAYOFF and refused.value.amount == state.payoff
    assert apply_payment(state, state.payoff, state.next_due_date).after.paid_off


def test_an_imported_loan_is_amortised_with_the_formulas_emi_not_the_workbooks() -> None:
    state, amount_paid = imported_state(
        Decimal("100000"), Decimal("12"), 12, START, monthly_installment=Decimal("20000"), emis_paid_on_time=3
    )
    rows = schedule(Decimal("100000"), Decimal("12"), 12, START)
    assert state.installments_paid == 3 and state.outstanding == rows[2].balance_after
    assert amount_paid == sum(row.amount for row in rows[:3])
    assert state.monthly_installment == Decimal("20000")  # the EMI in force from installment 4


def decimal_schedule(balance: Decimal, rate: Decimal, emi: Decimal, tenure: int) -> list[tuple[Decimal, ...]]:
    """The issue's rules, written plainly in Decimal: the oracle for the integer-cent stepping."""
    rows = []
    for number in range(1, tenure + 1):
        if balance <= 0:
            break
        interest = monthly_interest(balance, rate)
        principal = max(emi - interest, Decimal(0))
        if number == tenure or principal >= balance:
            principal = balance
        balance -= principal
        rows.append((principal + interest, principal, interest, balance))
    return rows


@settings(max_examples=300, deadline=None)
@given(
    amounts, rates, tenures, st.decimals(min_value=Decimal("0.00"), max_value=Decimal("9000000"), places=2)
)
def test_integer_cent_steps_equal_the_decimal_rules(
    amount: Decimal, rate: Decimal, tenure: int, emi: Decimal
) -> None:
    projected = project(amount, rate, emi, start_date=START, tenure=tenure)
    assert [(r.amount, r.principal, r.interest, r.balance_after) for r in projected] == decimal_schedule(
        amount, rate, emi, tenure
    )


@settings(max_examples=300, deadline=None)
@given(
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31)),
    st.integers(1, 600),
)
def test_due_dates_are_add_months(start: dt.date, tenure: int) -> None:
    expected = tuple(add_months(start, k).isoformat() for k in range(1, tenure + 1))
    assert all_due_date_texts(start, tenure) == expected


@settings(max_examples=300, deadline=None)
@given(
    amounts,
    rates,
    tenures,
    st.decimals(min_value=Decimal("0.00"), max_value=Decimal("9000000"), places=2),
    st.data(),
)
def test_imported_servicing_is_the_formula_schedule_up_to_the_emis_paid(
    amount: Decimal, rate: Decimal, tenure: int, workbook_emi: Decimal, data: st.DataObject
) -> None:
    paid = data.draw(st.integers(0, tenure))
    result = imported_servicing(amount, rate, tenure, START, workbook_emi, paid)
    formula = decimal_schedule(amount, rate, installment(amount, rate, tenure), tenure)[:paid]
    outstanding = formula[-1][3] if formula else amount
    assert result.installments_paid == len(formula)
    assert result.outstanding == outstanding and result.amount_paid == sum(
        (row[0] for row in formula), Decimal(0)
    )
    rest = decimal_schedule(outstanding, rate, workbook_emi, tenure - len(formula)) if outstanding else []
    assert result.repayments_left == len(rest)
    assert result.paid_off_on == (add_months(START, len(formula)) if outstanding == 0 else None)
