"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from app.credit.schedule import imported_servicing
from app.models import Base, Payment
from app.servicing.rows import PAYMENT
from tests.conftest import create_database, downgrade_to, drop_database, run_migrations
from tests.live import connect


async def test_the_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    def diff(sync_connection: Any) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync_connection), Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


# The customer the populated databases below hang their loans on.
ONE_CUSTOMER = """
INSERT INTO customers (customer_id, first_name, last_name, phone_number, monthly_salary, approved_limit)
VALUES (1, 'A', 'B', 9000000001, 50000, 1800000);
"""


@asynccontextmanager
async def database_at(revision: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A new database migrated to `revision`, and a connection to it; both gone afterwards."""
    name = f"credit_upgrade_{uuid.uuid4().hex[:12]}"
    url = await create_database(name)
    try:
        await asyncio.to_thread(run_migrations, url, revision)
        connection = await connect(url)
        try:
            yield url, connection
        finally:
            await connection.close()
    finally:
        await drop_database(name)


async def test_0004_gives_loans_already_stored_their_servicing_state() -> None:
    """A database loaded at 0003 (an imported history, a loan created through the API, a loan whose EMIs
    were all paid, and enough loans for several batches) upgrades in place to the servicing schema."""
    async with database_at("0003") as (url, connection):
        await connection.execute(
            ONE_CUSTOMER
            + """
            INSERT INTO loans (loan_id, customer_id, source_loan_id, loan_amount, tenure, interest_rate,
                               monthly_installment, emis_paid_on_time, start_date, end_date)
            SELECT g, 1, CASE WHEN g % 3 = 0 THEN NULL ELSE g END, 10000 + g, 6 + g % 60, g % 20,
                   500 + g % 700, (6 + g % 60) * (g % 4) / 3, date '2020-01-31' + g % 2000,
                   date '2030-01-01'
            FROM generate_series(1, 25000) AS g;
            """
        )
        before = await connection.fetch("SELECT * FROM loans ORDER BY loan_id")
        await asyncio.to_thread(run_migrations, url)
        after = {row["loan_id"]: row for row in await connection.fetch("SELECT * FROM loans")}
        payments = await connection.fetchval("SELECT count(*) FROM payments")
        checks = {
            row["conname"]
            for row in await connection.fetch(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'loans'::regclass AND contype = 'c'"
            )
        }

    assert len(after) == len(before) == 25_000 and payments == 0
    fully_paid = 0
    for old in before:
        new = after[old["loan_id"]]
        expected = imported_servicing(
            old["loan_amount"],
            old["interest_rate"],
            old["tenure"],
            old["start_date"],
            old["monthly_installment"],
            old["emis_paid_on_time"],
        )
        assert (
            new["outstanding_principal"],
            new["installments_paid"],
            new["amount_paid"],
            new["repayments_left"],
            new["paid_off_on"],
            new["last_paid_on"],
        ) == (
            expected.outstanding,
            expected.installments_paid,
            expected.amount_paid,
            expected.repayments_left,
            expected.paid_off_on,
            None,
        ), old["loan_id"]
        assert all(new[column] == value for column, value in dict(old).items()), old["loan_id"]
        fully_paid += new["paid_off_on"] is not None
    assert fully_paid > 1000  # the g % 4 == 3 rows paid every EMI
    assert {"ck_loans_outstanding_within_amount", "ck_loans_paid_off_when_repaid"} <= checks


async def test_0005_upgrades_a_populated_database_and_its_decisions_are_append_only() -> None:
    async with database_at("0004") as (url, connection):
        await connection.execute(
            ONE_CUSTOMER
            + """
            INSERT INTO loans (loan_id, customer_id, loan_amount, tenure, interest_rate,
                               monthly_installment, start_date, end_date, outstanding_principal,
                               repayments_left)
            VALUES (1, 1, 1000, 12, 10, 88, '2026-01-01', '2027-01-01', 1000, 12);
            """
        )
        await asyncio.to_thread(run_migrations, url)
        await connection.execute(
            """
            INSERT INTO credit_policies (version, policy_values) VALUES ('abcdef012345', '{}');
            INSERT INTO credit_decisions (customer_id, loan_amount, interest_rate, tenure, approved_limit,
                monthly_salary, current_debt, current_emis, emis_due, emis_paid_due, closed_loans,
                loans_this_year, credit_score, payment_history, utilisation, track_record,
                recent_activity, approved, reasons, policy_version, loan_id)
            VALUES (1, 1000, 10, 12, 1800000, 50000, 0, 0, 0, 0, 0, 0, 85, 35, 30, 0, 20, true,
                    '{within_policy}', 'abcdef012345', 1);
            """
        )
        refusals = []
        for statement in (
            "UPDATE credit_decisions SET credit_score = 99",
            "DELETE FROM credit_decisions",
        ):
            try:
                await connection.execute(statement)
            except Exception as exc:  # asyncpg's InsufficientPrivilegeError
                refusals.append(str(exc))
        kept = await connection.fetchval("SELECT count(*) FROM credit_decisions WHERE credit_score = 85")
        loans = await connection.fetchval("SELECT count(*) FROM loans")
    assert len(refusals) == 2 and all("append-only" in refusal for refusal in refusals)
    assert (kept, loans) == (1, 1)


async def test_0006_packs_the_payments_already_stored_and_every_new_one() -> None:
    """A database with payments at 0005 upgrades in place: each payment's `packed` is what
    app.servicing.rows.PAYMENT reads back as the row's own figures, a payment inserted afterwards gets it
    too, the unique index includes it, and the downgrade gives back 0005's index."""
    index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_payments_loan_id_installment_number'"
    columns = "payment_id, installment_number, paid_on, interest, principal, on_time"
    async with database_at("0005") as (url, connection):
        await connection.execute(
            ONE_CUSTOMER
            + """
            INSERT INTO loans (loan_id, customer_id, loan_amount, tenure, interest_rate,
                               monthly_installment, start_date, end_date, outstanding_principal,
                               repayments_left)
            SELECT g, 1, 900000, 360, 9.5, 7567.70, '2026-01-31', '2056-01-31', 900000, 360
            FROM generate_series(1, 30) AS g;
            INSERT INTO payments (loan_id, installment_number, paid_on, amount, interest, principal,
                                  on_time)
            SELECT l, k, date '2026-02-27' + 30 * k, 7567.70, 7125.00 - k / 100.0, 442.70 + k / 100.0,
                   k % 3 > 0
            FROM generate_series(1, 30) AS l, generate_series(1, 24) AS k;
            """
        )
        index_before = await connection.fetchval(index)
        await asyncio.to_thread(run_migrations, url)
        await connection.execute(
            "INSERT INTO payments (loan_id, installment_number, paid_on, amount, interest, principal,"
            " on_time) VALUES (1, 25, '2099-12-31', 100000.01, 99999.99, 0.02, false)"
        )
        stored = await connection.fetch(f"SELECT {columns}, packed FROM payments ORDER BY payment_id")
        index_after = await connection.fetchval(index)
        await asyncio.to_thread(downgrade_to, url, "0005")
        downgraded = await connection.fetchval(index)
        count = await connection.fetchval("SELECT count(*) FROM payments")

    assert len(stored) == 30 * 24 + 1
    for row in stored:
        assert PAYMENT.unpack(row["packed"]) == (
            row["installment_number"],
            row["payment_id"],
            row["paid_on"].toordinal(),
            int(row["interest"] * 100),
            int(row["principal"] * 100),
            row["on_time"],
        )
    assert PAYMENT.unpack(stored[-1]["packed"])[2:] == (dt.date(2099, 12, 31).toordinal(), 9_999_999, 2, 0)
    assert index_after.endswith("(loan_id, installment_number) INCLUDE (packed)"), index_after
    assert downgraded == index_before and count == 30 * 24 + 1


def test_the_model_computes_packed_as_migration_0006_does() -> None:
    """The schema comes from the migrations; the model's copy of the expression must not drift from it."""
    path = Path(__file__).parents[1] / "migrations" / "versions" / "0006_payments_packed_for_the_statement.py"
    spec = importlib.util.spec_from_file_location("migration_0006", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    computed = Payment.__table__.c.packed.computed
    assert computed is not None
    assert str(computed.sqltext) == migration.PACKED
    assert Payment.__table__.c.packed.comment == migration.COMMENT
