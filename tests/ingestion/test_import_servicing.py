"""Imported loans carry the servicing state of issue #11, and an import never overrides the API's ledger."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncEngine

from app.credit.policy import installment
from app.credit.schedule import imported_servicing, schedule
from tests.conftest import FIXED_NOW
from tests.ingestion.conftest import (
    CUSTOMER_HEADERS,
    LOAN_HEADERS,
    REAL_CUSTOMERS,
    REAL_LOANS,
    Ingest,
    customer,
    dump,
    loan,
    require_real_workbooks,
    rows,
    write_xlsx,
)
from tests.live import live_client, live_settings

pytestmark = [
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
    pytest.mark.live,
]

SERVICING = (
    "outstanding_principal, installments_paid, amount_paid, repayments_left, paid_off_on, last_paid_on"
)


def by_file(state: Any) -> dict[str, Any]:
    assert state.status == "complete", state.error
    assert state.report is not None
    return {f.file: f for f in state.report.files}


async def test_the_reference_loans_get_the_issues_servicing_state(ingest: Ingest, db: AsyncEngine) -> None:
    require_real_workbooks()
    by_file(await ingest(REAL_CUSTOMERS, REAL_LOANS))
    stored = await rows(
        db,
        "SELECT l.source_loan_id, c.source_customer_id, l.loan_amount, l.interest_rate, l.tenure,"
        f" l.start_date, l.monthly_installment, l.emis_paid_on_time, {SERVICING}"
        " FROM loans l JOIN customers c USING (customer_id)",
    )
    assert len(stored) == 782  # the 29 repeated Loan IDs belong to different customers: distinct loans
    paid_off = nothing_left = 0
    for r in stored:
        expected = imported_servicing(
            r.loan_amount, r.interest_rate, r.tenure, r.start_date, r.monthly_installment, r.emis_paid_on_time
        )
        assert (
            r.outstanding_principal,
            r.installments_paid,
            r.amount_paid,
            r.repayments_left,
            r.paid_off_on,
        ) == (
            expected.outstanding,
            expected.installments_paid,
            expected.amount_paid,
            expected.repayments_left,
            expected.paid_off_on,
        ), r
        assert r.last_paid_on is None
        paid_off += r.paid_off_on is not None
        nothing_left += r.repayments_left == 0
    assert paid_off == nothing_left > 0

    # One loan checked by hand against the workbook and the Decimal schedule: its first EMIs-paid
    # installments amortised with the formula's EMI, not the workbook's monthly payment.
    sheet = load_workbook(REAL_LOANS, read_only=True).active
    first = next(sheet.iter_rows(min_row=2, max_row=2, values_only=True))
    customer_id, loan_id, amount, tenure, rate, payment, paid = first[:7]
    amount, rate = Decimal(str(amount)), Decimal(str(rate))
    start = first[7].date()
    (row,) = [r for r in stored if (r.source_customer_id, r.source_loan_id) == (customer_id, loan_id)]
    formula = schedule(amount, rate, tenure, start)
    assert installment(amount, rate, tenure) != Decimal(str(payment))  # the export's payment does not match
    assert row.installments_paid == paid and row.outstanding_principal == formula[paid - 1].balance_after
    assert row.amount_paid == sum(r.amount for r in formula[:paid])
    assert row.monthly_installment == Decimal(str(payment))  # the workbook's payment stays the EMI in force

    # Re-importing the same workbooks changes nothing: not a row rewritten.
    snapshot = await dump(db)
    by_file(await ingest(REAL_CUSTOMERS, REAL_LOANS, force=True))
    assert await dump(db) == snapshot


async def test_a_loan_with_api_payments_is_left_alone_and_reported(
    ingest: Ingest, db: AsyncEngine, ingest_database_url: str, tmp_path: Path
) -> None:
    customers = write_xlsx(tmp_path / "c.xlsx", CUSTOMER_HEADERS, [customer(1), customer(2)])
    start = FIXED_NOW.date() - dt.timedelta(days=45)
    terms = {"Date of Approval": dt.datetime.combine(start, dt.time()), "End Date": dt.datetime(2027, 6, 1)}
    first = [
        loan(1, 501, **terms, **{"EMIs paid on Time": 0}),
        loan(2, 502, **terms, **{"EMIs paid on Time": 0}),
    ]
    by_file(await ingest(customers, write_xlsx(tmp_path / "l1.xlsx", LOAN_HEADERS, first)))

    async with live_client(live_settings(ingest_database_url)) as (_, client):
        paid = await client.post("/api/make-payment/1/501", json={"amount": 8908})
        assert paid.status_code == 201, paid.text
    before = await rows(db, "SELECT *, xmin::text FROM loans WHERE loan_id = 501")

    # The lender's next export says 3 EMIs were paid on both loans, and changes the amount.
    changed = {**terms, "EMIs paid on Time": 3, "Loan Amount": 90_000}
    second = [loan(1, 501, **changed), loan(2, 502, **changed)]
    report = by_file(await ingest(customers, write_xlsx(tmp_path / "l2.xlsx", LOAN_HEADERS, second)))["loans"]

    assert await rows(db, "SELECT *, xmin::text FROM loans WHERE loan_id = 501") == before
    assert (report.serviced_here, report.updated, report.unchanged) == (1, 1, 0)
    assert [(s.row, s.customer_id, s.workbook_loan_id, s.loan_id) for s in report.serviced_here_loans] == [
        (2, 1, 501, 501)
    ]
    other = (await rows(db, f"SELECT loan_amount, {SERVICING} FROM loans WHERE loan_id = 502"))[0]
    expected = imported_servicing(Decimal(90_000), Decimal("12.5"), 12, start, Decimal(8908), 3)
    assert (other.loan_amount, other.outstanding_principal, other.installments_paid) == (
        Decimal(90_000),
        expected.outstanding,
        3,
    )
    # Imported again unchanged: still reported, still untouched.
    snapshot = await dump(db)
    again = by_file(
        await ingest(customers, write_xlsx(tmp_path / "l3.xlsx", LOAN_HEADERS, second), force=True)
    )
    assert await dump(db) == snapshot
    again = again["loans"]
    assert (again.serviced_here, again.updated, again.unchanged) == (1, 0, 1), again
