"""A payment on an imported loan waits for a running import instead of blocking on its row locks."""

from __future__ import annotations

import pytest

from app.import_locks import IMPORT_RUNNING_KEY
from tests.live import connect, live_app, register

pytestmark = [pytest.mark.asyncio, pytest.mark.live]


async def test_payments_on_imported_loans_get_503_while_an_import_holds_its_lock() -> None:
    async with live_app("credit_payment_gate") as (url, _, client):
        customer = await register(client, monthly_income=100_000)
        created = await client.post(
            "/api/create-loan",
            json={
                "customer_id": customer["customer_id"],
                "loan_amount": 50_000,
                "interest_rate": 14,
                "tenure": 12,
            },
        )
        api_loan = created.json()
        imported = await client.post(
            "/api/create-loan",
            json={
                "customer_id": customer["customer_id"],
                "loan_amount": 50_000,
                "interest_rate": 14,
                "tenure": 12,
            },
        )
        imported_loan = imported.json()
        import_session = await connect(url)
        try:
            # As if a workbook had brought the second loan: it has a workbook Loan ID.
            await import_session.execute(
                "UPDATE loans SET source_loan_id = 7 WHERE loan_id = $1", imported_loan["loan_id"]
            )
            # The import's loans transaction holds its lock (exclusively) until it commits.
            transaction = import_session.transaction()
            await transaction.start()
            await import_session.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_RUNNING_KEY)

            refused = await client.post(
                f"/api/make-payment/{customer['customer_id']}/{imported_loan['loan_id']}",
                json={"amount": imported_loan["monthly_installment"]},
            )
            paid = await client.post(
                f"/api/make-payment/{customer['customer_id']}/{api_loan['loan_id']}",
                json={"amount": api_loan["monthly_installment"]},
            )
            await transaction.commit()
            after = await client.post(
                f"/api/make-payment/{customer['customer_id']}/{imported_loan['loan_id']}",
                json={"amount": imported_loan["monthly_installment"]},
            )
        finally:
            await import_session.close()

    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["type"].endswith("/import-in-progress")
    assert paid.status_code == 201, paid.text  # a loan no import can change is not held up
    assert after.status_code == 201 and after.json()["installment_number"] == 1  # nothing was recorded before
