"""view-statement: the document matches StatementOut, and its figures match the Decimal schedule."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.credit.dates import add_months
from app.credit.policy import installment
from app.credit.schedule import LoanState, imported_state, schedule
from app.servicing.rows import python_paid, python_rows
from app.servicing.schemas import StatementOut
from tests.conftest import FIXED_NOW
from tests.factories import add_customer, add_loan
from tests.servicing.conftest import Borrow, Clock, pay

TODAY = FIXED_NOW.date()


def rows(document: StatementOut) -> list[tuple[Any, ...]]:
    return [
        (row.number, row.due_date, row.amount, row.principal, row.interest, row.balance_after)
        for row in document.installments
    ]


async def test_a_30_year_loan_with_over_and_under_payments(
    client: AsyncClient, borrow: Borrow, clock: Clock
) -> None:
    clock.set(dt.date(2026, 1, 31))
    loan = await borrow(amount=3_000_000, rate="9.5", tenure=360)
    for day, amount in (
        (dt.date(2026, 2, 27), "25225.97"),
        (dt.date(2026, 3, 31), "60000"),
        (dt.date(2026, 5, 2), "24000"),
    ):
        clock.set(day)
        assert (await pay(client, loan, amount)).status_code == 201
    clock.set(dt.date(2026, 6, 15))
    response = await client.get(f"/api/view-statement/{loan['customer_id']}/{loan['loan_id']}")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = StatementOut.model_validate_json(response.content)

    assert len(document.installments) == 360 and [p.installment_number for p in document.payments] == [
        1,
        2,
        3,
    ]
    assert [row.status for row in document.installments[:4]] == [
        "paid_on_time",
        "paid_on_time",
        "paid_late",
        "overdue",
    ]
    assert document.installments[2].paid_on == dt.date(2026, 5, 2)
    # The unpaid rows are LoanState.remaining(), the Decimal projection, to the cent.
    state = LoanState(
        loan_amount=Decimal(3_000_000),
        annual_rate=Decimal("9.5"),
        tenure=360,
        start_date=dt.date(2026, 1, 31),
        outstanding=document.outstanding_principal,
        installments_paid=3,
        monthly_installment=document.monthly_installment,
    )
    projected = [
        (r.number, r.due_date, r.amount, r.principal, r.interest, r.balance_after) for r in state.remaining()
    ]
    assert rows(document)[3:] == projected
    assert sum(row.principal for row in document.installments) == Decimal(3_000_000)
    assert document.amount_paid == Decimal("25225.97") + 60000 + 24000
    assert document.next_due_date == add_months(dt.date(2026, 1, 31), 4) == dt.date(2026, 5, 31)
    assert (document.days_past_due, document.delinquency_class) == (15, "SMA-0")
    assert document.payoff_amount == state.payoff
    assert document.next_installment is not None and document.next_installment.amount == projected[0][2]


async def test_an_imported_loans_statement_shows_its_emis_paid_as_the_formula_schedule(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = await add_customer(session)
    start = dt.date(2024, 3, 10)
    loan = await add_loan(
        session,
        customer,
        loan_amount=50_000,
        tenure=24,
        interest_rate="11",
        monthly_installment=4000,
        emis_paid_on_time=5,
        start_date=start,
    )
    response = await client.get(f"/api/view-statement/{customer.customer_id}/{loan.loan_id}")
    document = StatementOut.model_validate_json(response.content)

    formula = schedule(Decimal(50_000), Decimal(11), 24, start)
    assert rows(document)[:5] == [
        (r.number, r.due_date, r.amount, r.principal, r.interest, r.balance_after) for r in formula[:5]
    ]
    assert all(row.status == "paid_on_time" and row.paid_on is None for row in document.installments[:5])
    state, amount_paid = imported_state(Decimal(50_000), Decimal(11), 24, start, Decimal(4000), 5)
    assert document.outstanding_principal == state.outstanding == formula[4].balance_after
    assert document.amount_paid == amount_paid and document.payments == []
    # From the sixth on, the workbook's 4000 (above the formula's EMI) repays the rest before month 24.
    assert installment(Decimal(50_000), Decimal(11), 24) < 4000
    assert len(document.installments) == 5 + len(state.remaining()) < 24
    assert document.repayments_left == len(state.remaining())
    assert document.loan_status == "overdue" and document.delinquency_class == "NPA"


async def test_the_statement_is_the_same_document_without_the_c_extension(
    client: AsyncClient, borrow: Borrow, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(dt.date(2026, 1, 31))
    loan = await borrow(amount=3_000_000, rate="9.5", tenure=360)
    clock.set(dt.date(2026, 2, 27))
    assert (await pay(client, loan, "30000")).status_code == 201
    clock.set(dt.date(2026, 9, 15))
    url = f"/api/view-statement/{loan['customer_id']}/{loan['loan_id']}"
    written = (await client.get(url)).content
    monkeypatch.setattr("app.servicing.statement_json.rows", python_rows)
    monkeypatch.setattr("app.servicing.statement_json.paid", python_paid)
    assert (await client.get(url)).content == written
    document = StatementOut.model_validate_json(written)
    statuses = [row.status for row in document.installments[:8]]
    assert statuses == ["paid_on_time"] + ["overdue"] * 6 + ["upcoming"]
